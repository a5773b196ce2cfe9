"""``search.budget``: the driver starts no new trial once the projected spend passes a limit.

Device-hours: what finished trials used (their ``device_seconds``: wall x devices), what the
running ones have used so far, plus one more trial at the mean cost of the finished ones.
Wall-hours: time since the sweep first started (kept in the journal, so a resumed sweep
counts from its first start) plus one mean trial. Before any trial finished there is no
estimate and trials start freely. Kept as running sums, so checking costs the same at trial
10,000 as at trial 10.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from bkd_sweep.config import Study

STARTED_AT_ATTR = "bkd_started_at"  # unix time the sweep first started (journal user attr)


@dataclass
class BudgetTally:
    """Finished trials' spend and this session's running trials' start times."""

    device_seconds: float = 0.0
    wall_seconds: float = 0.0
    running_since: dict[int, float] = field(default_factory=dict)  # number -> monotonic start
    counted: set[int] = field(default_factory=set)  # trial numbers in the sums

    def add_finished(self, number: int, device_seconds: float, wall_seconds: float) -> None:
        """Count a finished trial once (a resumed driver settles a trial, then reads every
        finished trial's spend: the settled one must not count twice)."""
        if number in self.counted:
            return
        self.counted.add(number)
        self.device_seconds += max(0.0, device_seconds)
        self.wall_seconds += max(0.0, wall_seconds)

    @property
    def finished(self) -> int:
        return len(self.counted)


class SweepBudget:
    """Says why no new trial may start (None: it may)."""

    def __init__(self, study: Study, started_at: float, devices_per_trial: float):
        self.limits = study.search.budget
        self.started_at = started_at
        self.devices_per_trial = devices_per_trial
        self.tally = BudgetTally()
        self.stopped_by: str | None = None

    @property
    def active(self) -> bool:
        return self.limits.device_hours is not None or self.limits.wall_hours is not None

    def trial_started(self, number: int) -> None:
        self.tally.running_since[number] = time.monotonic()

    def trial_held(self, number: int) -> None:
        """Asked but held back (its teacher is being prepared): not running, not spending."""
        self.tally.running_since.pop(number, None)

    def trial_finished(self, number: int, device_seconds: float, wall_seconds: float) -> None:
        self.tally.running_since.pop(number, None)
        self.tally.add_finished(number, device_seconds, wall_seconds)

    def projected_device_hours(self) -> float:
        tally = self.tally
        now = time.monotonic()
        running = sum(now - t for t in tally.running_since.values()) * self.devices_per_trial
        mean = tally.device_seconds / tally.finished if tally.finished else 0.0
        return (tally.device_seconds + running + mean) / 3600

    def projected_wall_hours(self) -> float:
        mean = self.tally.wall_seconds / self.tally.finished if self.tally.finished else 0.0
        return (time.time() - self.started_at + mean) / 3600

    def stop_reason(self) -> str | None:
        """Why the next trial must not start, or None. Sticky once set."""
        if self.stopped_by or not self.active:
            return self.stopped_by
        limits = self.limits
        if limits.device_hours is not None:
            projected = self.projected_device_hours()
            if projected > limits.device_hours:
                self.stopped_by = (f"search.budget.device_hours: {limits.device_hours:g} "
                                   f"(projected {projected:.3g} with one more trial)")
        if self.stopped_by is None and limits.wall_hours is not None:
            projected = self.projected_wall_hours()
            if projected > limits.wall_hours:
                self.stopped_by = (f"search.budget.wall_hours: {limits.wall_hours:g} "
                                   f"(projected {projected:.3g} with one more trial)")
        return self.stopped_by
