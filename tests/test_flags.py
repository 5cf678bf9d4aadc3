"""The flag generator: comments become help, types become argparse flags, nested dataclasses become
prefixed (or flat) groups, and only the flags a user gives change a config."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from genfusion.flags import (
    FLAT,
    NO_FLAG,
    add_dataclass_arguments,
    dataclass_from_args,
    field_docs,
    field_sections,
    field_specs,
    overrides_from_args,
)


@dataclass
class Inner:
    """Settings of a sub-step."""

    # --- optimisation ---
    iterations: int = 100  # optimisation steps
    rate: float = 1e-3  # learning rate (50% of the reference)
    # --- output ---
    seed: int | None = None  # random seed; None picks one

    def __post_init__(self) -> None:
        if self.iterations < 1:
            raise ValueError(f"iterations must be positive, got {self.iterations}")


@dataclass
class Outer:
    """A config nesting two others, one of them flat."""

    mode: Literal["fast", "full"] = "fast"  # which preset
    level: Literal[1, 2, 3] = 2  # detail level
    name: str = "run#1"  # a '#' inside a default is not a comment
    out: Path | None = None  # where to write (default: next to the input)
    colour: tuple[float, float, float] = (0.0, 0.5, 1.0)  # background RGB
    steps: tuple[int, ...] = (1, 2)  # rounds at these steps
    tags: list[str] = field(default_factory=list)  # free-form labels
    verbose: bool = False  # print more
    train: Inner = field(default_factory=Inner)  # the training step
    repair: Inner = field(default_factory=lambda: Inner(iterations=7), metadata=FLAT)  # the repair step
    callback: object = field(default=None, metadata=NO_FLAG)  # not for the command line
    threshold: float = field(  # multi-line field: the first comment counts
        default=0.5,
    )  # fmt: skip


@dataclass
class Required:
    target: Path  # the input file
    count: int = 3  # type: ignore[assignment]


@dataclass
class Child(Inner):
    extra: bool = True  # a field of the subclass


@dataclass
class Clash:
    iterations: int = 1  # clashes with the flat inner field of the same name
    inner: Inner = field(default_factory=Inner, metadata=FLAT)  # flat


@dataclass
class Unsupported:
    table: dict[str, int] = field(default_factory=dict)  # no flag can hold a dict


def _parser(cls, **kwargs) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="test")
    add_dataclass_arguments(parser, cls, **kwargs)
    return parser


def test_field_docs_read_the_comment_beside_each_field():
    docs = field_docs(Outer)
    assert docs["mode"] == "which preset"
    assert docs["name"] == "a '#' inside a default is not a comment"
    assert docs["threshold"] == "multi-line field: the first comment counts"
    assert "callback" in docs and "repair" in docs
    assert "count" not in field_docs(Required)  # a pragma is not documentation
    assert field_docs(Child) == {**field_docs(Inner), "extra": "a field of the subclass"}  # inherited
    assert field_sections(Inner) == {"iterations": "optimisation", "rate": "optimisation", "seed": "output"}


def test_specs_name_nested_fields_by_prefix_unless_flat():
    specs = {s.dest: s for s in field_specs(Outer)}
    assert specs["train__iterations"].flag == "--train-iterations"
    assert specs["repair__iterations"].flag == "--iterations"  # FLAT: no prefix, full dest
    assert specs["repair__iterations"].default == 7  # the nested default factory is shown
    assert specs["mode"].flag == "--mode" and specs["mode"].choices == ("fast", "full")
    assert specs["level"].value_type is int
    assert specs["colour"].nargs == 3 and specs["steps"].nargs == "+" and specs["tags"].nargs == "*"
    assert specs["train__seed"].optional and specs["train__seed"].help.endswith("(default: automatic)")
    assert specs["train__iterations"].section == "optimisation"
    assert specs["out"].help == "where to write (default: next to the input)"  # the comment says it
    assert "callback" not in specs
    assert [s.flag for s in field_specs(Outer, prefix="main")][:2] == ["--main-mode", "--main-level"]
    assert "train__seed" not in {s.dest for s in field_specs(Outer, skip=("train.seed",))}


def test_parsed_flags_build_the_nested_dataclass():
    parser = _parser(Outer)
    args = parser.parse_args(
        ["--mode", "full", "--level", "3", "--colour", "1", "0", "0", "--steps", "5", "6", "7",
         "--tags", "a", "b", "--verbose", "--train-iterations", "50", "--iterations", "9",
         "--train-seed", "4", "--out", "x/y"]
    )  # fmt: skip
    config = dataclass_from_args(Outer, args)
    assert (config.mode, config.level, config.verbose, config.out) == ("full", 3, True, Path("x/y"))
    assert config.colour == (1.0, 0.0, 0.0) and config.steps == (5, 6, 7) and config.tags == ["a", "b"]
    assert (config.train.iterations, config.train.seed) == (50, 4)
    assert config.repair.iterations == 9 and config.repair.rate == 1e-3
    assert overrides_from_args(Outer, args)["train"] == {"iterations": 50, "seed": 4}


def test_only_given_flags_change_anything():
    parser = _parser(Outer)
    untouched = dataclass_from_args(Outer, parser.parse_args([]))
    assert untouched == Outer() and untouched.repair.iterations == 7  # nested factory kept
    assert overrides_from_args(Outer, parser.parse_args([])) == {}
    base = Outer(mode="full", train=Inner(iterations=500, rate=0.5))
    args = parser.parse_args(["--train-seed", "3", "--no-verbose"])
    config = dataclass_from_args(Outer, args, base=base)
    assert config.mode == "full" and config.verbose is False
    assert (config.train.iterations, config.train.rate, config.train.seed) == (500, 0.5, 3)
    assert base.train.seed is None  # the base is not modified
    assert overrides_from_args(Outer, args) == {"verbose": False, "train": {"seed": 3}}


def test_validation_of_nested_configs_runs_on_given_values():
    args = _parser(Outer).parse_args(["--train-iterations", "0"])
    with pytest.raises(ValueError, match="iterations must be positive"):
        dataclass_from_args(Outer, args)


def test_bad_values_are_argparse_errors(capsys):
    parser = _parser(Outer)
    for argv in (["--mode", "slow"], ["--level", "4"], ["--train-iterations", "many"], ["--colour", "1"]):
        with pytest.raises(SystemExit):
            parser.parse_args(argv)
    assert "invalid choice" in capsys.readouterr().err


def test_help_is_grouped_and_escaped():
    text = _parser(Outer, title="demo").format_help()
    assert "learning rate (50% of the reference) (default: 0.001)" in " ".join(text.split())
    assert "demo: optimisation" in text and "--no-verbose" in text
    assert "--callback" not in text


def test_required_fields_become_required_flags(capsys):
    parser = _parser(Required)
    with pytest.raises(SystemExit):
        parser.parse_args([])
    assert "--target" in capsys.readouterr().err
    assert dataclass_from_args(Required, parser.parse_args(["--target", "a.txt"])) == Required(Path("a.txt"))


def test_collisions_and_unsupported_types_fail_when_the_parser_is_built():
    with pytest.raises(ValueError, match="--iterations"):
        field_specs(Clash)
    with pytest.raises(TypeError, match="Unsupported.table.*NO_FLAG"):
        field_specs(Unsupported)
    with pytest.raises(TypeError, match="base must be"):
        dataclass_from_args(Outer, argparse.Namespace(), base=Inner())


def test_reconstruct_config_keeps_its_flags():
    """The old ReconstructConfig helpers are thin calls into genfusion.flags now."""
    from genfusion.splat.config import (
        ReconstructConfig,
        add_config_arguments,
        config_from_args,
        config_overrides,
    )

    parser = argparse.ArgumentParser()
    add_config_arguments(parser, skip=("seed",))
    args = parser.parse_args(["--method", "3dgs", "--background", "1", "1", "1", "--random-background"])
    config = config_from_args(args, base=ReconstructConfig(iterations=123))
    assert (config.method, config.iterations, config.background, config.random_background) == (
        "3dgs", 123, (1.0, 1.0, 1.0), True,
    )  # fmt: skip
    assert config_overrides(args) == {
        "method": "3dgs",
        "background": (1.0, 1.0, 1.0),
        "random_background": True,
    }
    assert "--seed" not in parser.format_help()


def test_poses_choices_are_sfms_own():
    import typing

    from genfusion.cli.poses import PosesOptions
    from genfusion.data.sfm import CAMERA_MODELS, MATCHERS

    specs = {s.name: s for s in field_specs(PosesOptions)}
    assert specs["matcher"].choices == MATCHERS and specs["camera_model"].choices == CAMERA_MODELS
    assert typing.get_type_hints(PosesOptions)["fps"] is float


def test_prefix_and_preset_defaults():
    parser = argparse.ArgumentParser()
    add_dataclass_arguments(parser, Inner, prefix="video")
    add_dataclass_arguments(parser, Inner, prefix="mesh")  # two copies of one dataclass, one parser
    args = parser.parse_args(["--video-iterations", "5", "--mesh-rate", "0.5"])
    assert args.video__iterations == 5
    assert dataclass_from_args(Inner, args, prefix="video") == Inner(iterations=5)
    assert dataclass_from_args(Inner, args, prefix="mesh") == Inner(rate=0.5)
    preset = Outer(mode="full", train=Inner(iterations=900))
    specs = {s.dest: s for s in field_specs(Outer, defaults=preset)}
    assert specs["mode"].default == "full" and specs["train__iterations"].default == 900
    assert "(default: 900)" in specs["train__iterations"].help
