"""The wall-clock budget of a training command (`--max-minutes`): when training must stop so that
a last validation, the final evaluation and the checkpoint's writing still fit, and how many
users the final evaluation can rank when even that would not.

The costs are measured as the run goes: the validation pass is a sample of the final
evaluation's work (the same model ranking users of the same catalog), so the final evaluation
costs the validation's seconds per user times the users it ranks on both splits, plus the
most-popular baseline's seconds per user. Before the first validation, a training window's
share of a step stands in for a user's ranking: with the full softmax an overestimate (ranking
is a forward pass over the same window, without the backward pass or the loss at every
position), so the first epoch stops on the safe side; with a sampled loss over a large catalog
it may fall short (ranking scores every item), until the first validation measures it.
"""

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

# Measured seconds wander on shared machines: every estimate is stretched by this much.
SAFETY = 1.25
# What the end costs whatever the model's size: the training curve's plot (matplotlib's import
# alone is about a second), metrics.json, the checkpoint directory's rename and the
# interpreter's exit (torch's teardown took 1-2 s on a busy 2-core machine).
FIXED_SECONDS = 5.0
# The fewest users per split a final evaluation ranks, even past the budget: fewer tell nothing.
MIN_FINAL_USERS = 100


def process_started() -> float:
    """This process's start as a time.perf_counter() reading, so a budget counts the
    interpreter's start and imports too (Linux, from /proc; elsewhere: now)."""
    try:
        # After the command name's closing parenthesis, field 22 (start time, in clock ticks
        # since boot) is the 20th.
        stat = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        started = int(stat[19]) / os.sysconf("SC_CLK_TCK")
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - started
    except (OSError, ValueError, IndexError, AttributeError):
        return time.perf_counter()
    return time.perf_counter() - max(0.0, age)


@dataclass
class Costs:
    """Seconds measured so far (None: not yet)."""

    rank_per_user: float | None = None  # the model ranking one user's target (validation)
    training_per_window: float | None = None  # a training step's seconds per window (the guess)
    baseline_per_user: float = 0.0  # the most-popular baseline ranking one user's target
    weights_file: float = 0.0  # writing one model.safetensors

    def per_user(self) -> float:
        """The model's seconds per ranked user: measured, else the training-speed guess."""
        if self.rank_per_user is not None:
            return self.rank_per_user
        return self.training_per_window or 0.0


@dataclass(frozen=True)
class Workload:
    """What the end of a run does, in the units the costs are in."""

    validated_users: int  # users of one validation pass
    final_users: tuple[int, ...]  # users the final evaluation ranks per split (): none)
    weight_files: float  # model.safetensors-sized files written at the end (resume state)


def reserve_seconds(costs: Costs, work: Workload) -> float:
    """Seconds to keep back from training: one validation pass (of an epoch cut short), the
    final evaluation of model and baseline, and the checkpoint's files, all stretched by
    SAFETY, plus FIXED_SECONDS."""
    per_user = costs.per_user()
    validation = per_user * work.validated_users
    final = sum(work.final_users) * (per_user + costs.baseline_per_user)
    writing = work.weight_files * costs.weights_file
    return SAFETY * (validation + final + writing) + FIXED_SECONDS


def affordable_users(seconds_left: float, per_user: float, populations: list[int]) -> int | None:
    """Users per split the final evaluation can rank in `seconds_left` (each split the same
    number, at least MIN_FINAL_USERS); None when every split can be ranked whole.

    No SAFETY stretch here: the costs were just measured, the reserve already held the
    stretch, and FIXED_SECONDS has slack; stretching again would sample evaluations that
    overrun by a fraction of a second."""
    whole = sum(populations)
    if per_user <= 0 or per_user * whole <= seconds_left:
        return None
    affordable = int(seconds_left / (per_user * len(populations)))
    count = max(MIN_FINAL_USERS, affordable)
    return None if count >= max(populations) else count


@dataclass
class Budget:
    """A command's budget in seconds from `origin` (a time.perf_counter() reading: the command's
    start, moved back by the training time of the runs a `--resume` continues), and what its
    end needs. Without `seconds` nothing is bounded."""

    seconds: float | None
    origin: float
    work: Workload
    costs: Costs = field(default_factory=Costs)

    @property
    def bounded(self) -> bool:
        return bool(self.seconds)

    def reserve(self) -> float:
        return reserve_seconds(self.costs, self.work)

    def validation_seconds(self) -> float:
        """What one validation pass is expected to take."""
        return self.costs.per_user() * self.work.validated_users

    def left(self, now: float | None = None) -> float:
        """Seconds until the whole budget is spent (infinite without one)."""
        if not self.bounded:
            return float("inf")
        now = time.perf_counter() if now is None else now
        return self.origin + self.seconds - now

    def training_left(self, now: float | None = None) -> float:
        """Seconds training may still take (the reserve kept back)."""
        return self.left(now) - self.reserve()

    def training_share(self, now: float | None = None) -> float:
        """How much of the time training may take has gone (0..1+): the cosine follows it."""
        if not self.bounded:
            return 0.0
        now = time.perf_counter() if now is None else now
        span = self.seconds - self.reserve()
        return 1.0 if span <= 0 else (now - self.origin) / span

    def final_sample(
        self, asked: int | None, now: float | None = None
    ) -> tuple[int | None, dict | None]:
        """Users per split for the final evaluation (`asked`: --eval-users; None: all) and,
        when the time left makes it sample fewer, metrics.json's record saying so."""
        if not self.bounded:
            return asked, None
        populations = list(self.work.final_users)
        per_user = self.costs.per_user() + self.costs.baseline_per_user
        seconds_left = self.left(now) - FIXED_SECONDS
        affordable = affordable_users(seconds_left, per_user, populations)
        if affordable is None or (asked is not None and asked <= affordable):
            return asked, None
        reason = (
            f"the time budget left {max(0.0, seconds_left):.1f} s for the final evaluation; "
            f"all {sum(populations)} users would take about {per_user * sum(populations):.1f} s"
        )
        return affordable, {"users_per_split": affordable, "reason": reason}

    def record(self) -> dict:
        """metrics.json's record of the budget (seconds)."""
        return {
            "budget_seconds": self.seconds,
            "reserve_seconds": round(self.reserve(), 1) if self.bounded else None,
        }
