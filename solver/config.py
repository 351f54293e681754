"""The solver's configuration: frozen dataclasses, validated on construction.

Built once from the command line (or by a script) and passed down explicitly. Invalid values
raise `ValueError` with one sentence naming the option; the CLI turns it into exit code 2.
Defaults follow the references: sampling from the OpenMath-Nemotron evaluation (temperature
0.6, top-p 0.95), consensus from the AIMO-2 winners (4 of the first 5 answers), tool limits
from the AIMO-2 winners' Kaggle sandbox (6 calls) and NeMo-Skills' defaults (10 s per call,
1000 characters of output per stream).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .stopping import Consensus


@dataclass(frozen=True)
class ToolConfig:
    enabled: bool = True
    max_calls: int = 6
    timeout_s: float = 10.0
    max_output_chars: int = 1000
    num_workers: int = 8  # sandbox processes running code at once, across all samples

    def __post_init__(self) -> None:
        _require(self.max_calls >= 0, f"max tool calls must be >= 0, got {self.max_calls}")
        _require(self.timeout_s > 0, f"tool timeout must be > 0 seconds, got {self.timeout_s}")
        _require(self.max_output_chars >= 1, f"tool output characters must be >= 1, got {self.max_output_chars}")
        _require(self.num_workers >= 1, f"sandbox workers must be >= 1, got {self.num_workers}")


@dataclass(frozen=True)
class SolverConfig:
    num_samples: int = 8
    stop_after: int | None = None  # None: wait for all samples (or consensus / deadline)
    consensus: Consensus | None = field(default_factory=lambda: Consensus(4, 5))
    max_new_tokens: int = 2048  # tokens after the prompt: generated plus tool output
    temperature: float = 0.6
    top_p: float = 0.95
    seed: int = 0
    answer_modulus: int | None = 1000  # None: answers are not reduced
    fallback_answer: int = 0
    tools: ToolConfig = field(default_factory=ToolConfig)

    def __post_init__(self) -> None:
        _require(self.num_samples >= 1, f"number of samples must be >= 1, got {self.num_samples}")
        _require(
            self.stop_after is None or 1 <= self.stop_after <= self.num_samples,
            f"stop-after must be between 1 and the number of samples ({self.num_samples}), got {self.stop_after}",
        )
        _require(self.max_new_tokens >= 1, f"max new tokens must be >= 1, got {self.max_new_tokens}")
        _require(self.temperature >= 0, f"temperature must be >= 0, got {self.temperature}")
        _require(0 < self.top_p <= 1, f"top-p must be in (0, 1], got {self.top_p}")
        _require(self.answer_modulus is None or self.answer_modulus >= 1, f"answer modulus must be >= 1, got {self.answer_modulus}")


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)
