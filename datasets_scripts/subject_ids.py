"""Subject ids: canonical forms, and finding a subject's id in a file name.

Ids are compared tolerant of zero padding and case: ``"0050003"``, ``"50003"`` and ``50003`` are the
same subject, so are ``"Sub-01"`` and ``"sub-01"``. In a file name such as
``Pitt_0050003_rois_cc200.1D`` or ``sfnwmrda0010042_session_1_rest_1_aal_TCs.1D`` a numeric id is
any run of digits, a text id any occurrence not glued to other letters or digits.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_DIGITS = re.compile(r"\d+")


def canonical_id(value: Any) -> str:
    """Comparison key of a subject id: digits without zero padding, text case-folded."""
    text = str(value).strip()
    if re.fullmatch(r"\d+(\.0+)?", text):
        return str(int(text.split(".")[0]))
    return text.casefold()


@dataclass
class FileMatch:
    """Files matched to subject ids.

    Attributes:
        files: subject id (as given) -> its file.
        files_without_subject: files whose name holds no known id.
        subjects_without_file: ids no file name holds.
    """

    files: dict[str, Path] = field(default_factory=dict)
    files_without_subject: list[Path] = field(default_factory=list)
    subjects_without_file: list[str] = field(default_factory=list)


def ids_in_name(name: str, subject_ids: Sequence[str], id_pattern: str | re.Pattern | None = None) -> list[str]:
    """The subject ids (as given) that the file name `name` holds.

    With `id_pattern` (a regex with a group named ``id``, or else its first group) only what it
    captures counts. Several numeric candidates resolve to the longest digit run (so the ``200`` of
    ``cc200`` never beats ``0050003``).
    """
    return _IdIndex(subject_ids).find(name, id_pattern)


class _IdIndex:
    def __init__(self, subject_ids: Iterable[str]) -> None:
        self.numeric: dict[str, str] = {}
        self.text: list[tuple[re.Pattern, str]] = []
        for sid in subject_ids:
            key = canonical_id(sid)
            if key.isdigit():
                self.numeric[key] = sid
            else:
                pattern = re.compile(r"(?<![A-Za-z0-9])" + re.escape(str(sid).strip()) + r"(?![A-Za-z0-9])", re.I)
                self.text.append((pattern, sid))

    def find(self, name: str, id_pattern: str | re.Pattern | None = None) -> list[str]:
        if id_pattern is not None:
            match = re.search(id_pattern, name)
            if match is None:
                return []
            captured = match.group("id") if "id" in match.re.groupindex else match.group(1 if match.re.groups else 0)
            key = canonical_id(captured)
            hits = [self.numeric[key]] if key in self.numeric else []
            return hits + [sid for _, sid in self.text if canonical_id(sid) == key]
        numeric: dict[str, int] = {}  # id -> length of the longest digit run holding it
        for run in _DIGITS.findall(name):
            sid = self.numeric.get(str(int(run)))
            if sid is not None:
                numeric[sid] = max(numeric.get(sid, 0), len(run))
        if numeric:
            longest = max(numeric.values())
            numeric = {sid: n for sid, n in numeric.items() if n == longest}
        return list(numeric) + [sid for pattern, sid in self.text if pattern.search(name)]


def match_files(
    paths: Sequence[Path], subject_ids: Sequence[str], id_pattern: str | re.Pattern | None = None
) -> FileMatch:
    """Match files to subject ids by the id in each file's name.

    Raises ValueError when a name holds several ids, or several files hold one subject's id (pick
    one run with the loader's `pattern`, e.g. ``"*rest_1*"``).
    """
    index = _IdIndex(subject_ids)
    result = FileMatch()
    for path in sorted(paths):
        hits = index.find(path.name, id_pattern)
        if not hits:
            result.files_without_subject.append(path)
        elif len(hits) > 1:
            raise ValueError(
                f"File {path.name!r} matches several subject ids {hits}; give `id_pattern` (a regex with a group "
                "named 'id') to say where the id is."
            )
        elif hits[0] in result.files:
            raise ValueError(
                f"Subject {hits[0]!r} has several files: {result.files[hits[0]].name!r} and {path.name!r}; "
                "narrow the file `pattern` (e.g. to one run) so each subject has one."
            )
        else:
            result.files[hits[0]] = path
    result.subjects_without_file = [sid for sid in subject_ids if sid not in result.files]
    return result
