"""transformers' own model-conformance test modules (`ModelTesterMixin`, `ConfigTester`), loaded at test time.

The files are not copied into this repository: `load()` reads `tests/test_modeling_common.py` and
`tests/test_configuration_common.py` from the sdist of the installed transformers version, fetched once
with `pip download --no-binary :all: --no-deps transformers==<version>` into
`$FCN_LLM_CACHE/transformers-tests/<version>/` (default `~/.cache/fcn-llm/...`), and imports them as the
package `_hf_tests_<version>` so their relative imports resolve.

The sdist ships only the top-level `tests/*_common.py` / `*_mixin.py` files. The three modules they
import from sub-folders it lacks are stood in for, and each stand-in says what it leaves out:
- `exporters/test_export.py`: `ExportTesterMixin`, a base class of `ModelTesterMixin` that adds the
  torch.export / ONNX / ExecuTorch tests. Stand-in: an empty base class (those tests are not collected).
- `generation/test_utils.py`: `GenerationTesterMixin`, the `generate` tests. Stand-in: an empty class,
  which no test class here inherits (`test_generation_tester_mixin_inheritance` is skipped, saying so).
- `utils/test_configuration_utils.py`: `config_common_kwargs`, read only by
  `ConfigTester.check_config_arguments_init`, which returns before reading it for composite configs.
  Stand-in: an empty dict.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import types
from pathlib import Path

import transformers

from modeling_fcnllm.backbone import cache_root

VERSION = transformers.__version__
NEEDED = ("test_modeling_common.py", "test_configuration_common.py")
FETCH_TIMEOUT_S = 300


class SuiteUnavailable(RuntimeError):
    """The test modules could not be fetched or imported; the message says why and what to do."""


def suite_dir(version: str = VERSION) -> Path:
    """`$FCN_LLM_CACHE/transformers-tests/<version>/tests`: where the sdist's `tests/*.py` are kept."""
    return cache_root() / "transformers-tests" / version / "tests"


def _download_sdist(version: str, into: Path) -> Path:
    command = [
        sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps",
        "--disable-pip-version-check", "--retries", "1", "--timeout", "20", "-d", str(into),
        f"transformers=={version}",
    ]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=FETCH_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise SuiteUnavailable(f"`pip download` of the transformers {version} sdist ran past {FETCH_TIMEOUT_S} s.")
    sdists = sorted(into.glob("transformers-*.tar.gz"))
    if not sdists:  # pip may fail after saving the file (building metadata), so look for the file first
        tail = [line[:200] for line in (done.stderr or done.stdout).strip().splitlines()[-2:]]
        raise SuiteUnavailable(
            f"Could not fetch the transformers {version} sdist (no network or no index?): `{' '.join(command)}` "
            f"said: {' | '.join(tail)}"
        )
    return sdists[0]


def fetch(version: str = VERSION) -> Path:
    """Fetch the sdist once and keep its top-level `tests/*.py` in `suite_dir(version)`; returns that folder."""
    target = suite_dir(version)
    if all((target / name).exists() for name in NEEDED):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".fetch-", dir=target.parent))
    try:
        sdist = _download_sdist(version, work)
        staged = work / "tests"
        staged.mkdir()
        with tarfile.open(sdist) as archive:
            for member in archive.getmembers():
                parts = Path(member.name).parts  # transformers-<v>/tests/<file>.py
                if member.isfile() and len(parts) == 3 and parts[1] == "tests" and parts[2].endswith(".py"):
                    source = archive.extractfile(member)
                    (staged / parts[2]).write_bytes(source.read())
        missing = [name for name in NEEDED if not (staged / name).exists()]
        if missing:
            raise SuiteUnavailable(f"The transformers {version} sdist has no tests/{', tests/'.join(missing)}.")
        # `test_configuration_common` runs `direct_transformers_import(<its folder>)`, which executes this file
        (staged / "__init__.py").write_text("")
        if not all((target / name).exists() for name in NEEDED):  # another process may have won the race
            shutil.rmtree(target, ignore_errors=True)
            staged.rename(target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if not any(target.parent.iterdir()):
            target.parent.rmdir()
    return target


def _stand_in(name: str, **attributes) -> None:
    module = types.ModuleType(name)
    module.__dict__.update(attributes)
    sys.modules[name] = module


def load(version: str = VERSION) -> types.SimpleNamespace:
    """`modeling` (test_modeling_common) and `configuration` (test_configuration_common) of `version`.

    Raises `SuiteUnavailable` with the reason when they cannot be fetched or imported.
    """
    package = "_hf_tests_" + re.sub(r"\W", "_", version)
    if package + ".test_modeling_common" not in sys.modules:
        for module in ("parameterized", "pytest"):
            if importlib.util.find_spec(module) is None:
                raise SuiteUnavailable(f"transformers' test modules need `{module}`: pip install -e '.[dev]'.")
        folder = fetch(version)
        spec = importlib.util.spec_from_file_location(package, folder / "__init__.py",
                                                      submodule_search_locations=[str(folder)])
        sys.modules[package] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[package])
        if not (folder / "exporters" / "test_export.py").exists():
            _stand_in(f"{package}.exporters")
            _stand_in(f"{package}.exporters.test_export", ExportTesterMixin=type("ExportTesterMixin", (), {}))
        if not (folder / "generation" / "test_utils.py").exists():
            _stand_in(f"{package}.generation")
            _stand_in(f"{package}.generation.test_utils",
                      GenerationTesterMixin=type("GenerationTesterMixin", (), {}))
        if not (folder / "utils" / "test_configuration_utils.py").exists():
            _stand_in(f"{package}.utils")
            _stand_in(f"{package}.utils.test_configuration_utils", config_common_kwargs={})
    try:
        return types.SimpleNamespace(
            modeling=importlib.import_module(f"{package}.test_modeling_common"),
            configuration=importlib.import_module(f"{package}.test_configuration_common"),
        )
    except ImportError as error:
        raise SuiteUnavailable(f"transformers {version}'s test modules do not import here: {error}") from error


__all__ = ["SuiteUnavailable", "VERSION", "fetch", "load", "suite_dir"]
