"""Running untrusted Python for many samples at once: sessions, limits, isolation, results as values.

    from sandbox import Sandbox, SandboxLimits, ExecutionResult

    with Sandbox(max_workers=8, limits=SandboxLimits(timeout_s=10)) as sandbox:
        result = sandbox.execute("sample-1", "import sympy\\nprint(sympy.factorint(2**64 + 1))")
        result.status, result.stdout   # "ok", "{274177: 1, 67280421310721: 1}\\n"

See docs/sandbox.md for the guarantees and what is not covered.
"""

from sandbox.isolation import Isolation
from sandbox.limits import SandboxLimits
from sandbox.pool import Sandbox, SandboxStats
from sandbox.result import ExecutionResult, Status

__all__ = ["ExecutionResult", "Isolation", "Sandbox", "SandboxLimits", "SandboxStats", "Status"]
