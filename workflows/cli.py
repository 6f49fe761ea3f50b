"""The ``forecast`` command line. Heavy modules are imported inside the commands, so ``--help`` is fast."""

from __future__ import annotations

import argparse
import logging
import os
import sys

log = logging.getLogger("forecast")

EXAMPLES = """examples:
  forecast demo                                  # planet -> train -> run -> score on the bundled demo config
  forecast run my.yaml --members 0:64 ensemble.batch_size=16
  forecast score out/ensemble.zarr --truth out/planet/nature.zarr --out out/scores
  forecast import-checkpoint hens/sfno_linear_74chq_sc2_layers8_edim620_wstgl2-epoch70_seed102 checkpoints/hens-102
  forecast score big.zarr --truth era5.zarr --slurm 4 --slurm-queue cpu   # Dask workers in 4 Slurm jobs
  forecast score e2s.zarr --truth era5_wb2.nc --dims member=ensemble,init_time=time   # a store earth2studio wrote
  forecast check out/ensemble.zarr                 # every finished member against its manifest checksum
  forecast check --migrate out/ensemble.zarr       # convert a store of an earlier release, then check it
  forecast nightly nightly.yaml                    # the cron cycle: newest start time, run, score, retention
  forecast info out/ensemble.zarr                  # members, dates, leads, channels, complete or partial, size
  forecast export out/ensemble.zarr z500.nc --channels z500 --members 0:10   # CF NetCDF for other tools
  forecast plot out/ensemble.zarr --plume 52.5,13.4 --channel t2m            # members at one point vs lead

exit codes: 0 ok, 1 internal error (a bug), 2 bad input or config, 3 store problem, 4 disk full, 5 other system error,
  6 another nightly is running, 7 stopped by a signal (finished work is kept; rerun to resume)
"""


def _config(args):
    from workflows.config import bundled_config, load_config, with_workdir

    path = args.config
    if path is None and getattr(args, "command", "") == "demo":
        path = bundled_config("demo")
    config = load_config(path, args.overrides)
    if getattr(args, "workdir", None):
        config = with_workdir(config, args.workdir)
    from workflows.config import umask_bits

    os.umask(umask_bits(config.umask))  # the `umask` setting: who may read what this run writes
    return config


def cmd_planet(args):
    from workflows.recipes import make_planet

    nature, analysis = make_planet(_config(args))
    print(f"nature run: {nature}\nanalyses: {analysis}")


def cmd_train(args):
    from workflows.recipes import train_checkpoints

    for path in train_checkpoints(_config(args), progress_every=args.progress_every):
        print(path)


def cmd_skill(args):
    from workflows.recipes import compute_skill

    for name, rmse in compute_skill(_config(args)).items():
        print(name, " ".join(f"{c}={v:.4g}" for c, v in rmse.items()))


def cmd_run(args):
    from workflows.progress import Progress
    from workflows.recipes import run_ensemble

    progress = Progress(log_every=args.progress_every)
    print(run_ensemble(_config(args), args.members, args.init_times, args.experiment, progress=progress))


def cmd_score(args):
    from pathlib import Path

    from workflows.recipes import score_store

    from forecast.verify import parse_dims

    out = args.out or str(Path(args.store).with_suffix("")) + "-scores"
    report = score_store(args.store, args.truth, out, regrid=args.regrid, dims=parse_dims(args.dims),
                         **score_section(args).keywords())
    print(f"report: {report}")


SCORE_FLAGS = {"workers": "workers", "scheduler": "scheduler", "worker_memory": "worker_memory", "chunk_mb": "chunk_mb",
               "allow_partial": "allow_partial", "region": "regions"}
SLURM_FLAGS = {"slurm": "jobs", "slurm_cores": "cores", "slurm_processes": "processes", "slurm_memory": "memory",
               "slurm_walltime": "walltime", "slurm_queue": "queue", "slurm_account": "account",
               "slurm_interface": "interface", "slurm_job_extra": "job_extra"}


def score_section(args):
    """The ``score`` section of ``--config`` (else the defaults) with the flags given on the command line
    in place of its keys, checked as a config's would be (``--slurm-cores=0`` names ``score.slurm.cores``)."""
    from dataclasses import asdict

    from workflows.config import ScoreSection, build, load_config

    section = load_config(args.config).score if args.config else ScoreSection()
    data = asdict(section)
    given = {flag: getattr(args, flag) for flag in SCORE_FLAGS}
    data.update({SCORE_FLAGS[flag]: value for flag, value in given.items() if value is not None and value is not False})
    data["slurm"].update({key: getattr(args, flag) for flag, key in SLURM_FLAGS.items() if getattr(args, flag) is not None})
    return build(ScoreSection, data, "score")


def cmd_import_checkpoint(args):
    from models.makani import import_path

    for where, card in import_path(args.package, args.out, name=args.name, dt_hours=args.dt_hours,
                                   cos_zenith=args.cos_zenith):
        grid, extra = card.model_grid, card.architecture.get("extra_inputs", {})
        zenith = f", cos zenith {card.training['cos_zenith_arithmetic']}" if extra.get("cos_zenith") else ""
        print(f"{where}: {card.name}: {len(card.channels)} channels, {grid.nlat}x{grid.nlon} {grid.kind}, "
              f"dt {card.dt_hours} h, extra inputs {sorted(extra) or 'none'}{zenith}")


def cmd_check(args):
    from forecast.store import StoreError
    from workflows.check import check_store, migrate

    if args.migrate:
        for note in migrate(args.store):
            print(f"{args.store}: {note}")
    result = check_store(args.store, repair=args.repair)
    for problem in result.problems:
        print(problem)
    if not result.ok and (result.damaged or not args.migrate):  # a migrated store may be unfinished: rerun it
        raise StoreError(result.summary())
    print(result.summary())


def cmd_nightly(args):
    from workflows.nightly import run_nightly

    overrides = [*args.overrides, *([f"paths.workdir={args.workdir}"] if args.workdir else [])]
    run = run_nightly(_config(args), args.config, overrides)
    print(f"nightly: {run.message} (status: {run.root / 'status.json'})")


def cmd_info(args):
    import json

    from workflows.info import describe_store, store_info

    info = store_info(args.store)
    print(json.dumps(info, indent=2) if args.json else describe_store(info))


def cmd_export(args):
    from workflows.export import export_netcdf

    out = export_netcdf(args.store, args.out, members=args.members, channels=args.channels,
                        statistics_only=args.statistics_only)
    print(out)


def cmd_plot(args):
    from workflows.info import plot_store

    for path in plot_store(args.store, plume=args.plume, channel=args.channel, init_time=args.init_time,
                           lead=args.lead, out=args.out):
        print(path)


def cmd_dry_run(args):
    from workflows.dryrun import dry_run

    print(dry_run(_config(args), args.command, getattr(args, "experiment", None)), end="")


def cmd_demo(args):
    from workflows.recipes import demo

    report = demo(_config(args))
    print(f"report: {report}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="forecast", description="Huge machine-learning weather ensembles: "
                                     "train, perturb, run, store and verify.", epilog=EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings only (same as --log-level warning)")
    parser.add_argument("--log-level", choices=("debug", "info", "warning", "error"), help="log level (default info)")
    parser.add_argument("--log-file", help="also append the log to this file")
    parser.add_argument("--debug", action="store_true", help="print the traceback of any error on stderr")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(name, help_text, func, optional=False):
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("config", nargs="?" if optional else None, help="YAML config file"
                       + (" (default: the bundled demo config)" if optional else ""))
        p.add_argument("overrides", nargs="*", metavar="key=value", help="override config keys, e.g. ensemble.batch_size=4")
        p.add_argument("--workdir", help="replace paths.workdir")
        if name in ("run", "train", "skill", "nightly"):
            p.add_argument("--dry-run", action="store_true", help="print the resolved config (every default filled in), "
                           "the missing inputs" + (" and the run's size (members, files, bytes, GPU-hours)"
                                                   if name in ("run", "nightly") else "")
                           + "; load, read and write nothing")
        p.set_defaults(func=func)
        return p

    with_config("planet", "write the planet's nature run and analyses", cmd_planet)
    train = with_config("train", "train the configured checkpoints on the nature run", cmd_train)
    train.add_argument("--progress-every", type=float, default=30.0, metavar="SECONDS",
                       help="seconds between progress lines when not on a terminal (default 30)")
    with_config("skill", "deterministic RMSE of each checkpoint at skill.lead_hours (sets bred-vector amplitudes)", cmd_skill)
    run = with_config("run", "generate the ensemble into its Zarr store (resumes what is missing)", cmd_run)
    run.add_argument("--members", help="member range A:B to generate (default: all); under srun/torchrun each "
                     "rank takes its share of it")
    run.add_argument("--experiment", help="run the named experiment (a variant of the ensemble section) instead")
    run.add_argument("--init-times", help="index range A:B of the configured start dates to run (array jobs); "
                     "the store always holds all of them")
    run.add_argument("--progress-every", type=float, default=30.0, metavar="SECONDS",
                     help="seconds between progress lines (members done/total, member-steps/s, ETA) when not on a "
                     "terminal, e.g. in Slurm logs (default 30); on a terminal a progress bar")
    with_config("demo", "planet -> train -> skill -> run -> score on the embedded world", cmd_demo, optional=True)
    with_config("nightly", "for cron: run the newest cycle (locally or on Slurm), score what can be verified, "
                "apply retention, write status.json; exits at once with code 6 if another one is running", cmd_nightly)
    check = sub.add_parser("check", help="verify a store against its manifest and checksums; names missing or "
                           "corrupt pieces", description="Read every finished member of an ensemble store and compare "
                           "it with the checksums in its manifest; list what is unfinished, missing or corrupt.")
    check.add_argument("store", help="ensemble Zarr store")
    check.add_argument("--repair", action="store_true", help="mark members with missing or corrupt values unfinished, "
                       "so that the next `forecast run` recomputes them")
    check.add_argument("--migrate", action="store_true", help="first convert a store written by an earlier release "
                       "to this release's store layout (no run may write to it meanwhile), then check it")
    check.set_defaults(func=cmd_check)
    score = sub.add_parser("score", help="score an ensemble store against the truth and write a report")
    score.add_argument("store", help="ensemble Zarr store")
    score.add_argument("--truth", required=True, help="truth: Zarr or netCDF in any layout `run` reads (planet, "
                       "WeatherBench2, ARCO-ERA5, CDS); more times or a larger area are cut to the forecast's")
    score.add_argument("--regrid", action="store_true", help="regrid a truth on another grid to the forecast's "
                       "(as data.regrid does for runs); without it such a truth is refused")
    score.add_argument("--dims", metavar="ROLE=NAME,...", help="dimension names of a store another tool wrote, "
                       "e.g. member=ensemble,init_time=time (roles: member, init_time, lead_time, lat, lon)")
    score.add_argument("--out", help="output folder (default: the store's path with -scores for .zarr, "
                                      "e.g. out/ensemble-scores)")
    from workflows.config import ScoreSection

    defaults = ScoreSection()  # the one home of the defaults: the config's score section
    score.add_argument("--config", help="YAML config whose score: section gives the settings below (each flag given "
                       "overrides its key); default: the defaults shown")
    score.add_argument("--workers", type=int, help="local Dask workers (default: one per core)")
    score.add_argument("--scheduler", help="address of a running Dask scheduler instead of a local cluster")
    score.add_argument("--worker-memory", help=f"memory limit per local worker (default {defaults.worker_memory})")
    score.add_argument("--chunk-mb", type=float, help=f"Dask chunk size: all members x a tile (default {defaults.chunk_mb:g})")
    score.add_argument("--allow-partial", action="store_true", help="score an unfinished store: the members finished "
                       "at every start date (the report and scores.nc say so); without it an unfinished store is refused")
    score.add_argument("--region", action="append", metavar="NAME:S:N:W:E",
                       help="extra region box in degrees (repeatable), e.g. europe:35:70:-10:30")
    slurm = score.add_argument_group("Slurm (dask-jobqueue SLURMCluster instead of a local cluster)")
    o = defaults.slurm
    slurm.add_argument("--slurm", type=int, metavar="JOBS", help="submit JOBS Slurm jobs of Dask workers")
    slurm.add_argument("--slurm-cores", type=int, help=f"cores per job (default {o.cores})")
    slurm.add_argument("--slurm-processes", type=int, help="worker processes per job (default: one per core)")
    slurm.add_argument("--slurm-memory", help=f"memory per job (default {o.memory})")
    slurm.add_argument("--slurm-walltime", help=f"wall time per job (default {o.walltime})")
    slurm.add_argument("--slurm-queue", help="partition")
    slurm.add_argument("--slurm-account", help="account to charge")
    slurm.add_argument("--slurm-interface", help="network interface of the workers (e.g. ib0)")
    slurm.add_argument("--slurm-job-extra", action="append", metavar="OPTION",
                       help="extra #SBATCH option of the worker jobs, e.g. --slurm-job-extra=--exclusive (repeatable)")
    score.set_defaults(func=cmd_score)
    info = sub.add_parser("info", help="what a store holds: members, checkpoints, dates, leads, channels, complete "
                          "or partial, size, compression")
    info.add_argument("store", help="ensemble Zarr store")
    info.add_argument("--json", action="store_true", help="print JSON instead of the summary")
    info.set_defaults(func=cmd_info)
    export = sub.add_parser("export", help="write (part of) a store to a CF NetCDF file")
    export.add_argument("store", help="ensemble Zarr store")
    export.add_argument("out", help="NetCDF file to write")
    export.add_argument("--members", help="member range A:B (default: all)")
    export.add_argument("--channels", help="comma-separated channels (default: all)")
    export.add_argument("--statistics-only", action="store_true",
                        help="only the ensemble statistics (ensemble mean, std, ...), no member fields")
    export.set_defaults(func=cmd_export)
    plot = sub.add_parser("plot", help="plots of a store: a map of the ensemble mean, or a plume at one point")
    plot.add_argument("store", help="ensemble Zarr store")
    plot.add_argument("--plume", metavar="LAT,LON", help="every member at the grid point nearest LAT,LON against lead "
                      "time (longitude in -180..360 degrees east)")
    plot.add_argument("--channel", help="channel (default: the first)")
    plot.add_argument("--init-time", help="start date (default: the first)")
    plot.add_argument("--lead", type=float, help="lead time in hours for the map (default: the last)")
    plot.add_argument("--out", help="PNG file (default: beside the store)")
    plot.set_defaults(func=cmd_plot)
    text = "import a makani model package (HENS, sfno_73ch_small) into a checkpoint of this system"
    imp = sub.add_parser("import-checkpoint", help=text, description=text + ". The checkpoint is read with a restricted "
                         "unpickler (tensors, plain containers, makani's parameter classes as inert records); "
                         "anything that cannot be mapped is refused (docs/makani.md).")
    imp.add_argument("package", help="package folder (config.json, global_means.npy, global_stds.npy, "
                     "training_checkpoints/best_ckpt_mp0.tar, optional orography.nc, land_mask.nc), or a folder of "
                     "packages: imported as OUT/sfno-0, sfno-1, ... in sorted name order (OUT/makani-import.json)")
    imp.add_argument("out", help="output checkpoint folder (card.json + weights.safetensors), or folder of them")
    imp.add_argument("--cos-zenith", choices=("makani-float32", "float64"), default="makani-float32",
                     help="arithmetic of the cos-zenith input (default: makani's float32, what the model was trained on)")
    imp.add_argument("--name", help="checkpoint name (default: the package folder's name)")
    imp.add_argument("--dt-hours", type=int, help="time step in hours (default: config.json dt x dhours)")
    imp.set_defaults(func=cmd_import_checkpoint)
    return parser


def _fix_optional_config(args):
    """``forecast demo key=value``: a first positional with '=' is an override, not a config file."""
    if getattr(args, "config", None) and "=" in args.config and not args.config.endswith((".yaml", ".yml")):
        args.overrides = [args.config, *args.overrides]
        args.config = None
    return args


def _logging(args) -> None:
    """Log to stderr at ``--log-level`` (``-q``: warning), and also to ``--log-file`` (with dates) when given."""
    level = getattr(logging, (args.log_level or ("warning" if args.quiet else "info")).upper())
    handlers = [logging.StreamHandler(sys.stderr)]
    if args.log_file:
        from pathlib import Path

        Path(args.log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(args.log_file))
        handlers[-1].setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=handlers, format="%(asctime)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S", force=True)


def main(argv=None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    unknown = [item for item in extra if item.startswith("-") or "=" not in item or not hasattr(args, "overrides")]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    args = _fix_optional_config(args)
    try:
        _logging(args)
    except OSError as error:
        print(f"forecast: error: cannot write the log file {args.log_file} ({error.strerror or error})", file=sys.stderr)
        return 2
    for noisy in ("distributed", "bokeh", "tornado"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    os.umask(os.umask(0o027) | 0o027)  # what the commands create is not readable by others
    from workflows.interrupt import EXIT_CODE, Interrupted, exit_cleanly_on_signals, requeue_if_asked

    if getattr(args, "dry_run", False):
        args.func = cmd_dry_run  # one mechanism for every command that has the flag
    try:
        with exit_cleanly_on_signals():
            args.func(args)
    except Interrupted as interrupted:
        print(f"forecast: {interrupted}: finished work is saved; {requeue_if_asked(interrupted)}", file=sys.stderr)
        return EXIT_CODE
    except Exception as error:  # noqa: BLE001 -- the project's errors are one line; anything else is a bug
        from workflows.errors import describe, exit_code, is_known, report_internal_error  # on failure only

        if not is_known(error):
            print(f"forecast: {report_internal_error(error, args.debug)}", file=sys.stderr)
            return exit_code(error)
        if args.debug:
            log.error("forecast: error", exc_info=error)
        print(f"forecast: error: {describe(error)}", file=sys.stderr)
        return exit_code(error)
    return 0


if __name__ == "__main__":
    sys.exit(main())
