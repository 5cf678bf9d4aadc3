"""When generation rounds happen and how much their views weigh: pure functions, no state.

GenFusion (method.md, Stage 2) runs a generation round at fixed iterations; the views a round
generates supervise the reconstruction from that round until the next one (or the end of the run),
weighted by one half-sine over that window, ``lambda_reg * sin(pi * (step - start) / (stop -
start))``: zero when the views arrive (the splats are not yanked towards them), largest halfway,
zero again when the next round replaces them.

The published round steps belong to the published lengths (7,000 / 7,000 / 26,000 iterations);
a run of another length keeps them at the same *fractions* of the run, so a 1,500-step CPU
preview has its rounds where the paper's 7,000-step run has them.
"""

from __future__ import annotations

from genfusion.errors import GenFusionError
from genfusion.splat.supervision import GeneratedWeight

# mode -> (published iterations, published round steps)
PUBLISHED_ROUNDS: dict[str, tuple[int, tuple[int, ...]]] = {
    "masked": (7_000, (3_000, 4_000, 5_000, 6_000)),
    "sparse": (7_000, (1_000, 2_000, 3_000, 4_000, 5_000, 6_000)),
    "complete": (26_000, (5_000, 9_000, 13_000, 17_000, 21_000)),
}


def round_steps(mode: str, iterations: int) -> tuple[int, ...]:
    """The mode's published round steps, moved to the same fractions of a run of ``iterations``."""
    if mode not in PUBLISHED_ROUNDS:
        raise GenFusionError(f"unknown fusion mode {mode!r}; use masked, sparse or complete")
    published, steps = PUBLISHED_ROUNDS[mode]
    scaled = sorted({round(step * iterations / published) for step in steps})
    return tuple(step for step in scaled if 0 < step < iterations)


def check_rounds(rounds: tuple[int, ...], iterations: int) -> tuple[int, ...]:
    """Rounds given by the user: increasing, inside (0, iterations); a clear error otherwise."""
    rounds = tuple(int(r) for r in rounds)
    if not rounds:
        raise GenFusionError("--rounds is empty; give at least one step, e.g. --rounds 3000 5000")
    if any(b <= a for a, b in zip(rounds, rounds[1:], strict=False)):
        raise GenFusionError(f"--rounds must increase, got {list(rounds)}")
    outside = [r for r in rounds if not 0 < r < iterations]
    if outside:
        raise GenFusionError(
            f"--rounds {outside} lie outside the run (1 .. {iterations - 1}); raise --iterations or "
            "move the rounds"
        )
    return rounds


def round_window(rounds: tuple[int, ...], index: int, iterations: int) -> tuple[int, int]:
    """[start, stop) of round ``index``: from its step to the next round's (or the run's end)."""
    start = rounds[index]
    stop = rounds[index + 1] if index + 1 < len(rounds) else iterations
    return start, stop


def round_weight(rounds: tuple[int, ...], index: int, iterations: int, peak: float) -> GeneratedWeight:
    """The half-sine weight of round ``index``'s views (a value the trainer's checkpoint holds)."""
    start, stop = round_window(rounds, index, iterations)
    return GeneratedWeight(peak=peak, start=start, stop=stop, shape="half_sine")


def half_sine(step: int, start: int, stop: int, peak: float) -> float:
    """``peak * sin(pi * (step - start) / (stop - start))`` inside [start, stop), else 0."""
    return GeneratedWeight(peak=peak, start=start, stop=stop, shape="half_sine").at(step)
