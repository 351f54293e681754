"""The prompt: one function builds it for the solver, the calibration set and drafter data.

The user text is NeMo-Skills' `generic/math` prompt, the one the OpenMath-Nemotron-14B-Kaggle
model was trained and evaluated with; the system message is empty; the model's own chat
template (from its tokenizer) turns the messages into text.
"""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase

MATH_PROMPT = (
    "Solve the following math problem. Make sure to put the answer (and only answer) inside "
    "\\boxed{{}}.\n\n{problem}"
)


def messages(problem: str, solution: str | None = None) -> list[dict[str, str]]:
    """Chat messages for a problem; with `solution`, it is the assistant's turn."""
    turns = [
        {"role": "system", "content": ""},
        {"role": "user", "content": MATH_PROMPT.format(problem=problem)},
    ]
    if solution is not None:
        turns.append({"role": "assistant", "content": solution})
    return turns


def prompt_text(tokenizer: PreTrainedTokenizerBase, problem: str) -> str:
    """The exact text the engine sees before the model's first generated token."""
    return tokenizer.apply_chat_template(messages(problem), tokenize=False, add_generation_prompt=True)


def prompt_token_ids(tokenizer: PreTrainedTokenizerBase, problem: str) -> tuple[int, ...]:
    return tuple(tokenizer.encode(prompt_text(tokenizer, problem), add_special_tokens=False))


def training_text(tokenizer: PreTrainedTokenizerBase, problem: str, solution: str) -> str:
    """Prompt plus solution as one string, the way the engine would have seen the sample:
    `prompt_text(...) + solution`, closed by the template's end-of-turn marker."""
    full = tokenizer.apply_chat_template(messages(problem, solution), tokenize=False)
    prefix = prompt_text(tokenizer, problem)
    if full.startswith(prefix):
        return full
    # Templates that rewrite the assistant turn (e.g. stripping reasoning) would make the
    # calibration text differ from inference; keep the inference prefix byte-identical instead.
    return prefix + solution
