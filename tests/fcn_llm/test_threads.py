import pytest
import torch

from fcn_llm import threads
from fcn_llm.threads import CpuSample, ThreadGovernor, free_cores, read_cpu_sample


class FakeMachine:
    """Cumulative ticks of a 2-core machine: `run(seconds, own=..., others=...)` advances them."""

    def __init__(self, cores: int = 2):
        self.cores, self.busy, self.total, self.own, self.now = cores, 0, 0, 0, 0.0

    def run(self, seconds: float, own: float, others: float) -> None:
        ticks = int(seconds * 100)
        self.total += ticks * self.cores
        self.own += int(ticks * own)
        self.busy += int(ticks * (own + others))
        self.now += seconds

    def read(self, cores) -> CpuSample:
        return CpuSample(busy=self.busy, total=self.total, own=self.own)


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    threads.disable_adaptive_threads()
    torch.set_num_threads(before)


def governor(machine: FakeMachine, monkeypatch, max_threads: int = 2) -> ThreadGovernor:
    monkeypatch.setattr(threads, "allowed_cores", lambda: frozenset(range(machine.cores)))
    return ThreadGovernor(max_threads=max_threads, interval_s=1.0, reader=machine.read, clock=lambda: machine.now)


def test_free_cores_counts_only_other_processes_time():
    before = CpuSample(busy=0, total=200, own=0)
    assert free_cores(before, CpuSample(busy=200, total=400, own=200), 2) == pytest.approx(2.0)  # all ours
    assert free_cores(before, CpuSample(busy=200, total=400, own=100), 2) == pytest.approx(1.0)  # a busy loop
    assert free_cores(before, before, 2) is None


def test_a_busy_process_takes_a_thread_and_gives_it_back_when_it_stops(monkeypatch, restore_threads):
    machine = FakeMachine()
    gov = governor(machine, monkeypatch)
    torch.set_num_threads(2)
    machine.run(2.0, own=2.0, others=0.0)
    assert gov.update() == 2 and torch.get_num_threads() == 2
    machine.run(2.0, own=1.33, others=0.67)  # a busy loop preempts one of our two spinning threads
    assert gov.update() == 1 and torch.get_num_threads() == 1
    machine.run(2.0, own=1.0, others=1.0)
    assert gov.update() == 1
    machine.run(2.0, own=1.0, others=0.05)
    assert gov.update() == 2 and torch.get_num_threads() == 2
    assert gov.changes == 2


def test_the_count_is_re_read_only_after_the_interval(monkeypatch, restore_threads):
    machine = FakeMachine()
    gov = governor(machine, monkeypatch)
    torch.set_num_threads(2)
    machine.run(0.5, own=1.0, others=1.0)
    assert gov.update() == 2  # half a second of contention is not enough to act on
    machine.run(0.6, own=1.0, others=1.0)
    assert gov.update() == 1


def test_never_more_than_it_started_with_and_never_below_one(monkeypatch, restore_threads):
    machine = FakeMachine(cores=4)
    gov = governor(machine, monkeypatch, max_threads=2)
    machine.run(2.0, own=0.0, others=0.0)
    assert gov.update() == 2  # four idle cores, but the user allowed two
    machine.run(2.0, own=0.0, others=4.0)
    assert gov.update() == 1


def test_without_proc_it_leaves_the_count_alone(monkeypatch, restore_threads):
    torch.set_num_threads(2)
    monkeypatch.setattr(threads, "allowed_cores", lambda: frozenset({0, 1}))
    gov = ThreadGovernor(max_threads=2, interval_s=0.0, reader=lambda cores: None)
    assert not gov.active and gov.update() == 2


def test_rebalance_is_a_no_op_until_enabled(restore_threads):
    threads.disable_adaptive_threads()
    torch.set_num_threads(1)
    assert threads.rebalance() == 1


def test_reads_this_machines_proc_stat():
    sample = read_cpu_sample(threads.allowed_cores())
    if sample is None:
        pytest.skip("no /proc on this platform")
    assert sample.total > 0 and 0 <= sample.busy <= sample.total and sample.own >= 0


def test_enabling_twice_keeps_the_first_governors_limit(restore_threads):
    threads.disable_adaptive_threads()
    torch.set_num_threads(2)
    first = threads.enable_adaptive_threads()
    torch.set_num_threads(1)  # as if the governor had given a core away
    assert threads.enable_adaptive_threads() is first and first.max_threads == 2


def test_a_fixed_thread_count_from_the_environment_turns_the_governor_off(monkeypatch, restore_threads):
    threads.disable_adaptive_threads()
    monkeypatch.setenv("FCN_LLM_THREADS", "1")
    assert threads.enable_adaptive_threads() is None
    assert torch.get_num_threads() == 1 and threads.rebalance() == 1


@pytest.mark.parametrize("value", ["0", "two", "-1"])
def test_a_bad_fixed_thread_count_is_named(monkeypatch, value):
    monkeypatch.setenv("FCN_LLM_THREADS", value)
    with pytest.raises(ValueError, match="FCN_LLM_THREADS"):
        threads.enable_adaptive_threads()
