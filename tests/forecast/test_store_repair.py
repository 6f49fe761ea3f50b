"""Issue 15, the store side: statistics stores that survive kills and concurrent runs, shards that
``check --repair`` really repairs, checksummed chunks, and stores of the previous release.

Every ``forecast`` command is a separate process (``tests/cli_process.py``); stores are compared bit for
bit with an uninterrupted run's, streaming statistics included.
"""

import json
import os
import random
import shutil
import signal
import time
from dataclasses import replace

import numpy as np
import pytest
import xarray as xr

from forecast.store import STORE_VERSION, Checksums, EnsembleStore, StoreError, StoreVersionError
from workflows.config import bundled_config
from workflows.recipes import build_engine

TINY = str(bundled_config("tiny"))
STATISTICS = ("ensemble.statistics.channels=[z500,tcwv]", "ensemble.statistics.thresholds={z500: [52000.0]}",
              "ensemble.statistics.quantiles=[0.5]", "ensemble.statistics.tail_members=5")
SEED = int(os.environ.get("FORECAST_FAULT_SEED", "20261128"))  # the kill points; printed on failure


def run_args(world, store, *extra):
    return ("-q", "run", TINY, "--workdir", world.paths.workdir, f"paths.store={store}", *STATISTICS, *extra)


def values(path):
    ds = xr.open_zarr(path, consolidated=False)
    return {name: ds[name].values for name in ds.data_vars}


def assert_identical(path, reference):
    got, want = values(path), values(reference)
    assert got.keys() == want.keys() and any(name.endswith("_ensemble_std") for name in want)
    for name in want:
        assert np.array_equal(got[name], want[name]), name  # bit for bit: no NaN, every member is written
    assert EnsembleStore.open(path).verify() == []


def with_statistics(config):
    statistics = replace(config.ensemble.statistics, channels=("z500", "tcwv"), thresholds={"z500": [52000.0]},
                         quantiles=(0.5,), tail_members=5)
    return replace(config, ensemble=replace(config.ensemble, statistics=statistics))


@pytest.fixture(scope="module")
def reference(tiny_world, forecast_processes, tmp_path_factory):
    """An uninterrupted run with streaming statistics, and how long it took as a process."""
    path = tmp_path_factory.mktemp("reference") / "ensemble.zarr"
    result = forecast_processes.run(*run_args(tiny_world, path))
    assert result.returncode == 0, result.stderr
    return path, result.seconds


@pytest.fixture(scope="module")
def unfinalised(tiny_world, tmp_path_factory):
    """Every member and every block's statistics part stored, no start date's statistics finalised: what
    a run killed just before finalisation leaves."""
    path = tmp_path_factory.mktemp("unfinalised") / "ensemble.zarr"
    engine = build_engine(with_statistics(tiny_world))
    engine.finalise_statistics = lambda store, init_index: False  # the instance's, not the class's
    engine.run(engine.create_store(path))
    return path


def part_files(path):
    """The chunk files of the statistics parts (flags included) in the store at ``path``."""
    return sorted(f for f in (path / "statistics_parts").rglob("*") if f.is_file() and f.name != "zarr.json")


# -- statistics that cannot overlap ---------------------------------------------------------------
def test_two_concurrent_runs_with_statistics_both_succeed_and_equal_one_run(tiny_world, forecast_processes, reference,
                                                                           tmp_path):
    path = tmp_path / "concurrent.zarr"
    first, second = (forecast_processes.start(*run_args(tiny_world, path)) for _ in range(2))
    results = [first.wait(), second.wait()]
    assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]
    assert_identical(path, reference[0])
    assert part_files(path) == []


def test_a_finished_store_keeps_no_statistics_parts(reference, unfinalised):
    """A part is about (24 + 8 x tail_members) bytes per lead, channel and point: one per block outgrows the
    fields at scale, so finalisation removes them once the final statistics are durable."""
    assert len(part_files(unfinalised)) > 0  # the parts are there until then
    store = EnsembleStore.open(reference[0])
    assert part_files(reference[0]) == []
    assert [store.statistics_part_files(i) for i in range(2)] == [[], []]
    assert [store.statistics_done(i) for i in range(2)] == [True, True]


KILLED_FINALISATION = """
import os, signal, sys
from pathlib import Path
import zarr.storage._local as local
from ensembles.stats import finalise_statistics
from forecast.store import EnsembleStore

path, kill_at = sys.argv[1], int(sys.argv[2])
operations = 0

def counted(operation):
    def counted_operation(*args, **kwargs):
        global operations
        if operations == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        operations += 1
        return operation(*args, **kwargs)
    return counted_operation

local._put, Path.unlink = counted(local._put), counted(Path.unlink)  # every chunk write, every removal
store = EnsembleStore.open(path)
for i in range(len(store.schema.init_times)):
    finalise_statistics(store, i)
print(operations)
"""


def finalise_killed_at(path, kill_at):
    """Finalise the statistics of the store at ``path`` in a process SIGKILLed just before its ``kill_at``-th
    chunk write or file removal (-1: never); returns the process's result."""
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    return subprocess.run([sys.executable, "-c", KILLED_FINALISATION, str(path), str(kill_at)], env=env,
                          capture_output=True, text=True, timeout=120)


def test_sigkill_anywhere_in_finalisation_or_part_removal_then_rerun_gives_the_uninterrupted_store(
        tiny_world, forecast_processes, reference, unfinalised, tmp_path):
    counting = tmp_path / "counting.zarr"
    shutil.copytree(unfinalised, counting)
    whole = finalise_killed_at(counting, -1)
    assert whole.returncode == 0, whole.stderr
    operations = int(whole.stdout)
    assert_identical(counting, reference[0])
    rng = random.Random(SEED)
    points = sorted({0, operations - 1, *rng.sample(range(1, operations - 1), 4)})
    report, during_removal = [], 0
    for kill_at in points:
        path = tmp_path / f"killed-{kill_at}.zarr"
        shutil.copytree(unfinalised, path)
        killed = finalise_killed_at(path, kill_at)
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        store = EnsembleStore.open(path)
        left, final = len(part_files(path)), [store.statistics_done(i) for i in range(2)]
        during_removal += any(final) and left > 0
        report.append(f"killed before operation {kill_at}/{operations}: {left} part files left, final {final}")
        checked = forecast_processes.run("-q", "check", path)  # leftover parts are harmless, unfinalised not
        assert checked.returncode == (0 if all(final) else 3), f"{report[-1]}: {checked.stderr}"
        if all(final):  # check --repair removes the leftovers (so does the rerun, below)
            assert forecast_processes.run("-q", "check", "--repair", path).returncode == 0
            assert part_files(path) == [], report[-1]
        rerun = forecast_processes.run(*run_args(tiny_world, path))
        assert rerun.returncode == 0, f"seed {SEED}, {report[-1]}: {rerun.stderr}"
        assert_identical(path, reference[0])
        assert part_files(path) == [], report[-1]
    assert during_removal, f"seed {SEED}: no kill landed while parts were being removed:\n" + "\n".join(report)


def test_killed_between_a_statistics_part_and_the_done_flags_resumes_to_the_same_store(tiny_world, reference,
                                                                                       tmp_path, monkeypatch):
    """The kill that lost statistics stores for good: a part is stored, the done flags are not."""
    path = tmp_path / "killed.zarr"
    engine = build_engine(with_statistics(tiny_world))
    calls = []

    def killed_after_two_blocks(self, *args):
        calls.append(args)
        if len(calls) == 3:
            raise KeyboardInterrupt("killed")
        return finish(self, *args)

    finish = EnsembleStore.finish
    monkeypatch.setattr(EnsembleStore, "finish", killed_after_two_blocks)
    with pytest.raises(KeyboardInterrupt):
        engine.run(engine.create_store(path))
    monkeypatch.setattr(EnsembleStore, "finish", finish)
    store = EnsembleStore.open(path)
    parts_without_done_flags = [(lo, hi) for stored, (lo, hi) in zip(store.statistics_complete(0), store.blocks)
                                if stored and not store.done[0, lo:hi].any()]
    assert parts_without_done_flags == [(4, 5)]  # the third block: its part stored, its done flags not
    for _ in range(2):  # and a rerun of a finished store changes nothing
        build_engine(with_statistics(tiny_world)).run(EnsembleStore.open(path))
        assert_identical(path, reference[0])


def test_sigkill_at_random_points_with_statistics_then_rerun_gives_the_uninterrupted_store(
        tiny_world, forecast_processes, reference, tmp_path):
    reference_path, seconds = reference
    rng = random.Random(SEED)
    size = EnsembleStore.open(reference_path).done.size
    report, partial = [], 0
    for trial in range(3):
        target = (1 + trial) * size // 4
        path = tmp_path / f"trial-{trial}.zarr"
        running = forecast_processes.start(*run_args(tiny_world, path))
        while running.running() and not ((path / "zarr.json").exists() and EnsembleStore.open(path).done[:].sum() >= target):
            time.sleep(0.01)
        time.sleep(rng.random() * seconds / size)
        running.kill(signal.SIGKILL)
        killed = running.wait()
        done = int(EnsembleStore.open(path).done[:].sum()) if (path / "zarr.json").exists() else 0
        partial += killed.returncode == -signal.SIGKILL and 0 < done < size
        report.append(f"trial {trial}: exit {killed.returncode} after {target}/{size} members, {done} done")
        resumed = forecast_processes.run(*run_args(tiny_world, path))
        assert resumed.returncode == 0, f"seed {SEED}, {report[-1]}: {resumed.stderr}"
        assert_identical(path, reference_path)
    print("\n".join(report))
    assert partial, f"seed {SEED}: no kill landed while the store was partly written:\n" + "\n".join(report)


def test_a_finaliser_whose_parts_are_removed_while_it_reads_them_stops_without_a_lock(reference, unfinalised,
                                                                                     tmp_path):
    """Where the file system has no locks, two finalisers can overlap: the one that finishes first removes
    the parts the other is still reading (missing chunks read as zeros). The late one must not write."""
    import contextlib

    from ensembles.stats import finalise_statistics

    path = tmp_path / "overlapping.zarr"
    shutil.copytree(unfinalised, path)
    late, first = EnsembleStore.open(path), EnsembleStore.open(path)
    late.exclusive = first.exclusive = contextlib.nullcontext
    read, blocks_read = late.statistics_part, []

    def part_while_the_other_finishes(init_index, block):
        arrays = read(init_index, block)
        if len(blocks_read) == 2:
            assert finalise_statistics(first, init_index)  # writes the statistics, removes the parts
        blocks_read.append(block)
        return arrays

    late.statistics_part = part_while_the_other_finishes
    assert finalise_statistics(late, 0)
    stopped_after = list(blocks_read)
    assert finalise_statistics(late, 1)  # undisturbed
    assert_identical(path, reference[0])  # not the zeros of removed parts folded in
    assert part_files(path) == [] and stopped_after == [0, 1, 2]  # stopped at the first part gone


def test_check_flags_unfinalised_statistics_and_repair_finalises_them(forecast_processes, reference, unfinalised,
                                                                      tmp_path):
    path = tmp_path / "unfinalised.zarr"
    shutil.copytree(unfinalised, path)
    checked = forecast_processes.run("-q", "check", path)
    assert checked.returncode == 3 and "statistics were not finalised" in checked.stderr, checked.stderr
    repaired = forecast_processes.run("-q", "check", "--repair", path)
    assert "finalised the statistics of 2 start date(s)" in repaired.stderr, repaired.stderr
    assert forecast_processes.run("-q", "check", path).returncode == 0
    assert_identical(path, reference[0])
    assert part_files(path) == []


def test_repair_resets_only_the_damaged_members_of_finalised_statistics(tiny_world, forecast_processes, reference,
                                                                         tmp_path):
    """Final statistics came from the members as computed: a shard damaged afterwards costs its members
    only, not every block of the start date (whose parts are gone)."""
    path = tmp_path / "final.zarr"
    shutil.copytree(reference[0], path)
    truncate(path / "u500" / "c" / "2" / "1" / "0" / "0" / "0")
    forecast_processes.run("-q", "check", "--repair", path)
    store = EnsembleStore.open(path)
    assert np.flatnonzero(store.done[1] == 0).tolist() == [4, 5] and store.done[0].all()
    assert store.statistics_done(1)
    assert forecast_processes.run(*run_args(tiny_world, path)).returncode == 0
    assert_identical(path, reference[0])
    assert part_files(path) == []


def test_finished_members_without_a_statistics_part_are_reset_by_repair(tiny_world, forecast_processes, reference,
                                                                        unfinalised, tmp_path):
    path = tmp_path / "inconsistent.zarr"
    shutil.copytree(unfinalised, path)
    store = EnsembleStore.open(path)
    store.group["statistics_parts/complete"][0, 2] = 0  # block 2's part lost, its members still marked done
    lo, hi = store.blocks[2]
    checked = forecast_processes.run("-q", "check", path)
    assert checked.returncode == 3 and f"members {lo}:{hi}: finished but their statistics part is missing" in checked.stdout
    forecast_processes.run("-q", "check", "--repair", path)
    assert not EnsembleStore.open(path).done[0, lo:hi].any()
    assert forecast_processes.run(*run_args(tiny_world, path)).returncode == 0
    assert_identical(path, reference[0])


# -- repair that repairs --------------------------------------------------------------------------
def truncate(shard):
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])


def flip_index_bit(shard):
    data = bytearray(shard.read_bytes())
    data[-10] ^= 0x04  # inside the shard index (at the end of the file, before its crc32c)
    shard.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [truncate, flip_index_bit])
def test_undecodable_shard_is_named_removed_by_repair_and_rewritten_by_the_rerun(tiny_world, forecast_processes,
                                                                                  reference, tmp_path, damage):
    path = tmp_path / "damaged.zarr"
    shutil.copytree(reference[0], path)
    shard = path / "u500" / "c" / "2" / "1" / "0" / "0" / "0"  # members 4:6 (a window across two checkpoints)
    damage(shard)
    checked = forecast_processes.run("-q", "check", path)
    assert checked.returncode == 3, checked.stderr
    assert "members 4:6 channel u500" in checked.stderr and "u500/c/2/1/0/0/0 cannot be decoded" in checked.stderr
    repaired = forecast_processes.run("-q", "check", "--repair", path)
    assert repaired.returncode == 3 and "removed 1 undecodable file(s)" in repaired.stderr, repaired.stderr
    assert not shard.exists()
    rerun = forecast_processes.run(*run_args(tiny_world, path))
    assert rerun.returncode == 0, rerun.stderr
    assert forecast_processes.run("-q", "check", path).returncode == 0
    assert_identical(path, reference[0])


def test_a_rerun_rewrites_an_undecodable_shard_whose_members_are_all_pending(tiny_world, reference, tmp_path):
    """The partial write of block 4:5 into shard 4:6 must not fail on the corrupt shard it would merge into."""
    path = tmp_path / "pending.zarr"
    shutil.copytree(reference[0], path)
    store = EnsembleStore.open(path)
    store.reset(1, 4, 6)
    flip_index_bit(path / "u500" / "c" / "2" / "1" / "0" / "0" / "0")
    build_engine(with_statistics(tiny_world)).run(EnsembleStore.open(path))
    assert_identical(path, reference[0])


def test_writing_into_a_corrupt_shard_with_finished_members_names_the_file(reference, tmp_path):
    path = tmp_path / "finished.zarr"
    shutil.copytree(reference[0], path)
    store = EnsembleStore.open(path)
    shard = path / "u500" / "c" / "2" / "1" / "0" / "0" / "0"
    flip_index_bit(shard)
    values = np.zeros((1, 3, len(store.channels), 17, 32), dtype=np.float32)
    with pytest.raises(StoreError, match=r"u500/c/2/1/0/0/0 cannot be decoded .* finished members \[5\].*--repair"):
        store.write(1, 4, 5, 0, values)


def test_a_diverged_member_s_nan_values_are_stored_and_check_finds_no_damage(reference, tmp_path):
    """A model that blows up writes NaN (here with the sign bit, as arithmetic gives): every chunk is stored and
    keeps its bits, so ``check`` does not take the absent all-NaN chunks for deleted ones or the read-back NaN
    for corrupt values."""
    path = tmp_path / "diverged.zarr"
    shutil.copytree(reference[0], path)
    store = EnsembleStore.open(path)
    store.reset(1, 4, 6)
    leads = store.group[store.channels[0]].shape[2]
    values = np.full((2, leads, len(store.channels), 17, 32), np.nan, dtype=np.float32)
    values.view(np.uint32)[...] |= np.uint32(0x80000000)
    store.write(1, 4, 6, 0, values)
    checksums = Checksums(2, len(store.channels))
    for lead in range(values.shape[1]):
        checksums.update(values[:, lead])
    store.finish(1, 4, 6, checksums.result())
    assert EnsembleStore.open(path).verify() == []
    assert np.array_equal(store.group[store.channels[0]][4:6, 1].view(np.uint32), values[:, :, 0].view(np.uint32))


@pytest.mark.parametrize("chunk", ["manifest/done/c/1/5", "manifest/checksum/c/1/5/0", "statistics_parts/complete/c.1.3",
                                   "manifest/statistics_done/c/1"])
def test_an_undecodable_manifest_or_part_flag_is_removed_by_repair_and_recomputed(tiny_world, forecast_processes,
                                                                                   reference, unfinalised, tmp_path,
                                                                                   chunk):
    path = tmp_path / "flags.zarr"
    shutil.copytree(unfinalised if chunk.startswith("statistics_parts") else reference[0], path)  # parts: till final
    flag = path / chunk
    flag.write_bytes(flag.read_bytes()[:-1] + bytes([flag.read_bytes()[-1] ^ 0x01]))  # the zstd checksum fails
    checked = forecast_processes.run("-q", "check", path)
    assert checked.returncode == 3 and f"{chunk} cannot be decoded" in checked.stderr, checked.stderr
    repaired = forecast_processes.run("-q", "check", "--repair", path)
    assert "removed 1 undecodable file(s)" in repaired.stderr, repaired.stderr
    rerun = forecast_processes.run(*run_args(tiny_world, path))
    assert rerun.returncode == 0, rerun.stderr
    assert_identical(path, reference[0])


# -- checksums --------------------------------------------------------------------------------------
def test_every_array_the_store_holds_is_checksummed(reference):
    path = reference[0]
    arrays = [json.loads(p.read_text()) for p in path.rglob("zarr.json")]
    arrays = [a for a in arrays if a["node_type"] == "array"]
    assert len(arrays) > 20

    def zstd(codecs):
        for codec in codecs:
            if codec["name"] == "zstd":
                yield codec
            yield from zstd(codec.get("configuration", {}).get("codecs", []))

    assert all(any(c["configuration"]["checksum"] for c in zstd(a["codecs"])) for a in arrays)


def test_a_zeroed_run_of_bytes_in_a_chunk_is_undecodable_not_plausible(reference, tmp_path):
    path = tmp_path / "zeroed.zarr"
    shutil.copytree(reference[0], path)
    chunk = path / "z500_ensemble_mean" / "c" / "0" / "0" / "0" / "0"
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2: len(data) // 2 + 16] = bytes(16)
    chunk.write_bytes(bytes(data))
    problems = EnsembleStore.open(path).verify()
    assert any("z500_ensemble_mean cannot be decoded" in p for p in problems), problems


# -- stores of the previous release ----------------------------------------------------------------
def downgrade_to_version_1(path):
    """What today's release wrote: no ``store_version``, zstd without checksums, manifest chunks of a
    batch of members, statistics parts as groups named by a random id (one per rank and checkpoint)."""
    import zarr

    store = EnsembleStore.open(path)
    schema, shard = store.schema, store.schema.layout["shard_members"]
    done, checksum, final = store.done[:], store.checksums[:], store.group["manifest/statistics_done"][:]
    group = store.group
    for name in ("done", "checksum"):
        del group["manifest"][name]
    manifest = group["manifest"]
    manifest.create_array("done", shape=done.shape, chunks=(1, shard), dtype="uint8", fill_value=0)[...] = done
    manifest.create_array("checksum", shape=checksum.shape, chunks=(1, shard, checksum.shape[2]), dtype="int64",
                          fill_value=0)[...] = checksum
    del group["statistics_parts"]
    part = group.require_group("statistics_parts/i1").create_group("0f3c2a")
    part.create_array("mean", shape=(1,), dtype="float64")[...] = 0.0
    part.attrs.update(members=[[0, 4]], complete=True)
    root = json.loads((path / "zarr.json").read_text())
    root.pop("consolidated_metadata", None)  # that release wrote none
    (path / "zarr.json").write_text(json.dumps(root))
    for meta in path.rglob("zarr.json"):
        text = meta.read_text()
        meta.write_text(text.replace('"checksum": true', '"checksum": false'))
    attrs = dict(zarr.open_group(str(path)).attrs)
    del attrs["store_version"]
    zarr.open_group(str(path), mode="r+").attrs.put(attrs)
    group = zarr.open_group(str(path), mode="r+")
    group["manifest/statistics_done"][...] = np.array([final[0], 0], dtype="uint8")
    group["manifest/done"][1, 4:9] = 0  # start date 1 was partly run when the release changed


def test_a_store_of_the_previous_release_is_refused_with_the_migrate_command_then_resumes(
        tiny_world, forecast_processes, reference, tmp_path):
    path = tmp_path / "old.zarr"
    shutil.copytree(reference[0], path)
    downgrade_to_version_1(path)
    with pytest.raises(StoreVersionError):
        EnsembleStore.open(path)
    refused = forecast_processes.run(*run_args(tiny_world, path))
    assert refused.returncode == 3 and len(refused.error_lines) == 1, refused.stderr
    line = refused.error_lines[0]
    for words in ("store layout version 1", f"version {STORE_VERSION}", f"forecast check --migrate {path}"):
        assert words in line, line
    assert "another schema" not in line
    migrated = forecast_processes.run("-q", "check", "--migrate", path)
    assert migrated.returncode == 0 and "not finished" in migrated.stdout, migrated.stderr  # start date 1 unfinished
    assert EnsembleStore.open(path).done[0].all()  # final statistics kept their members
    resumed = forecast_processes.run(*run_args(tiny_world, path))
    assert resumed.returncode == 0, resumed.stderr
    assert_identical(path, reference[0])


def test_a_store_of_a_newer_release_is_refused(reference, tmp_path):
    import zarr

    path = tmp_path / "new.zarr"
    shutil.copytree(reference[0], path)
    zarr.open_group(str(path), mode="r+").attrs["store_version"] = STORE_VERSION + 1
    with pytest.raises(StoreVersionError, match=f"version {STORE_VERSION + 1} .* reads version {STORE_VERSION} only"):
        EnsembleStore.open(path)


# -- checksummed inputs -----------------------------------------------------------------------------
def test_a_damaged_analysis_chunk_is_bad_input_naming_the_file(tiny_world, forecast_processes, tmp_path):
    """The planet writes its stores with checksums; 16 zeroed bytes in an analysis chunk used to give
    values up to 3e35 in the initial state and a plausible-looking store."""
    analysis = tmp_path / "analysis.zarr"
    shutil.copytree(tiny_world.paths.resolve("analysis"), analysis)
    meta = json.loads((analysis / "z500" / "zarr.json").read_text())
    assert [c for c in meta["codecs"] if c["name"] == "zstd"][0]["configuration"]["checksum"]
    for chunk in sorted((analysis / "z500" / "c").rglob("*")):
        if chunk.is_file():
            data = bytearray(chunk.read_bytes())
            data[len(data) // 2: len(data) // 2 + 16] = bytes(16)
            chunk.write_bytes(bytes(data))
    store = tmp_path / "s.zarr"
    result = forecast_processes.run(*run_args(tiny_world, store, f"paths.analysis={analysis}"))
    assert result.returncode == 2, result.stderr
    assert len(result.error_lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"chunk file {analysis}/z500/c/" in result.error_lines[0] and "cannot be decoded" in result.error_lines[0]


def test_nightly_migrates_a_cycle_store_started_before_the_upgrade(reference, tmp_path):
    from workflows.nightly import store_state

    path = tmp_path / "cycle" / "ensemble.zarr"
    shutil.copytree(reference[0], path)
    downgrade_to_version_1(path)
    assert store_state(path) == "partial"  # start date 1 is resumed by the nightly's run
    assert EnsembleStore.open(path).done[0].all()


def test_scoring_a_store_with_a_damaged_chunk_names_the_file(tiny_world, forecast_processes, reference, tmp_path):
    path = tmp_path / "scored.zarr"
    shutil.copytree(reference[0], path)
    shard = path / "z500" / "c" / "1" / "0" / "0" / "0" / "0"
    data = bytearray(shard.read_bytes())
    data[len(data) // 3: len(data) // 3 + 16] = bytes(16)  # inside the compressed fields: the zstd checksum fails
    shard.write_bytes(bytes(data))
    result = forecast_processes.run("-q", "score", path, "--truth", tiny_world.paths.resolve("nature"), "--out",
                                    tmp_path / "scores", "--workers", "1")
    assert result.returncode == 3, result.stderr
    assert f"store {path}: chunk file {shard} cannot be decoded" in result.error_lines[-1], result.stderr


def test_a_store_written_by_release_1_migrates_keeping_its_values_and_resumes(tmp_path):
    """``tests/fixtures/store_v1.tar.gz`` was written by release 1's own code (``make_store_v1.py``)."""
    import sys
    import tarfile
    from pathlib import Path

    from ensembles.stats import finalise_statistics
    from ensembles.stats import EnsembleAccumulator
    from forecast.store import Checksums
    from forecast.store_migration import migrate_store

    fixtures = Path(__file__).parents[1] / "fixtures"
    sys.path.insert(0, str(fixtures))
    try:  # the generator's numbers, regenerated here
        from make_store_v1 import LEADS, SPEC, member_values
    finally:
        sys.path.remove(str(fixtures))
    with tarfile.open(fixtures / "store_v1.tar.gz") as tar:
        # our own archive; Python before 3.11.4 (Debian 12's 3.11.2) has no extraction filters
        tar.extractall(tmp_path, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    path = tmp_path / "store_v1.zarr"
    before = xr.open_zarr(path, consolidated=False).load()
    with pytest.raises(StoreVersionError, match=r"layout version 1 .*forecast check --migrate"):
        EnsembleStore.open(path)
    notes = migrate_store(path)
    assert any("init 2000-01-02T00:00:00: statistics were not final" in n for n in notes), notes
    store = EnsembleStore.open(path)
    after = xr.open_zarr(path, consolidated=False).load()
    for name in before.data_vars:
        assert np.array_equal(before[name].values, after[name].values, equal_nan=True), name
    assert store.done[0].all() and not store.done[1].any()  # start date 1's part cannot be split: recomputed
    assert [p.message for p in store.problems() if p.init_index == 0] == []  # values match release 1's checksums
    values = member_values(1)
    for lo, hi in store.blocks:  # resume start date 1 as this release's engine does, block by block
        store.write(1, lo, hi, 0, values[lo:hi])
        accumulator, sums = EnsembleAccumulator(SPEC, LEADS, (5, 8)), Checksums(hi - lo, 1)
        for lead in range(LEADS):
            accumulator.update(lead, values[lo:hi, lead])
            sums.update(values[lo:hi, lead])
        store.write_statistics_part(1, (lo, hi), accumulator.to_arrays())
        store.finish(1, lo, hi, sums.result())
    assert finalise_statistics(store, 1) and store.verify() == []
    final = xr.open_zarr(path, consolidated=False)
    z = values[:, :, 0].astype(np.float64)
    assert np.allclose(final["z500_ensemble_mean"].values[1], z.mean(0), rtol=1e-6, atol=1e-6)
    assert np.allclose(final["z500_ensemble_std"].values[1], z.std(0, ddof=1), rtol=1e-5, atol=1e-6)
    assert np.array_equal(final["z500_exceedance_probability"].values[0, 1], (z > 0.5).mean(0).astype(np.float32))
