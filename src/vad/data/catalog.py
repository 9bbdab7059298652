"""The datasets the suite knows by name: what each stands for, how to obtain it, and the error for a missing one.

Every reader (:mod:`vad.data.layout`, :mod:`vad.data.raw`) and ``vad.prepare`` consult it.

    dataset_info("ped2").raw          # "ucsd": the reader of its official download
    prepare_hint("ped2")              # "python -m vad.prepare dataset=ped2 source=<download folder>"
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vad.errors import DataError


@dataclass(frozen=True)
class DatasetInfo:
    """What a dataset name of the suite stands for.

    ``raw``: the reader of its official download (None when there is none); ``label_names``: stems under which its
    label files circulate (``<stem>.mat``, ``frame_labels_<stem>.npy``).
    """

    description: str
    raw: str | None
    label_names: tuple[str, ...] = ()


KNOWN_DATASETS: dict[str, DatasetInfo] = {
    "ped1": DatasetInfo("UCSD Ped1: 34 training / 36 test grey videos of 200 frames", "ucsd", ("ped1",)),
    "ped2": DatasetInfo("UCSD Ped2: 16 training / 12 test grey videos, 2010 test frames", "ucsd", ("ped2",)),
    "avenue": DatasetInfo("CUHK Avenue: 16 training / 21 test colour videos, 15324 test frames", "avenue", ("avenue",)),
    "shanghaitech": DatasetInfo(
        "ShanghaiTech Campus: 330 training / 107 test videos of 13 scenes",
        "shanghaitech",
        ("shanghaitech", "shanghai"),
    ),
    "synthetic": DatasetInfo("the suite's generated fixed-camera scene, in the FFP layout", None, ("synthetic",)),
    "folder": DatasetInfo("any footage: the FFP layout, or a folder of videos / frame folders", None),
}


def dataset_info(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` of a dataset name; an unknown name raises DataError listing the known ones."""
    if name not in KNOWN_DATASETS:
        raise DataError(
            f"unknown dataset {name!r}; known: {', '.join(KNOWN_DATASETS)} "
            "(use dataset=folder with its root for any other footage)"
        )
    return KNOWN_DATASETS[name]


def prepare_hint(name: str) -> str:
    """How to obtain dataset ``name``: the prepare command, or how the synthetic / folder sets come about."""
    info = KNOWN_DATASETS.get(name)
    if info is not None and info.raw is not None:
        return f"python -m vad.prepare dataset={name} source=<download folder>"
    if name == "synthetic":
        return "the synthetic set is generated on first use by the datamodule (dataset=synthetic)"
    return "point the dataset root at your footage"


def missing_root_error(name: str, root: Path, tree: str) -> DataError:
    """The error for a dataset folder that does not exist: the expected ``tree`` and how to make it (multi-line)."""
    return DataError(
        f"{root}: dataset folder of {name!r} not found. Expected:\n{tree}\n"
        f"Create it from the official download with:\n  {prepare_hint(name)}\n"
        "or point paths.data_dir (or the dataset root) at an existing copy."
    )
