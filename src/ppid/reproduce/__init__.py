"""`ppid reproduce`: the paper's Tables 1, 3, 4 and 6 from one resumable command.

    ppid reproduce --tables 1,3,4,6 --families dim,indexnet,gca --seeds 0,1,2 --budget cpu_small --out DIR

plan.py makes the runs (data, teachers, baselines, PPID students, ablations, per seed), probe.py
times them on this machine, report.py writes DIR/tables.md, DIR/tables.json and DIR/table*.png.
DIR/.gitignore keeps weights, checkpoints, data and images out of version control, so DIR can be
committed as the record of the results.
"""

import os
import time
from pathlib import Path

from .. import PpidError
from .calibrate import calibration_runs, with_calibration, write_calibration
from .causes import parse_gamma_tests, with_gamma_tests
from .plan import (BUDGETS, FAMILIES, TABLES, adopt, divergence, execute, make_plan, prepare_data, reevaluate,
                   status, teachers_trained_first, trained_steps)
from .teachers import with_teacher_seeds

GITIGNORE = "# written by ppid reproduce: results are committed, weights and data are not\n" \
    "data/\n.locks/\n*.safetensors\n*.pt\nimages/\ntb/\n"


def _ints(text, what):
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise PpidError(f"--{what} expects comma-separated integers, got {text!r}") from None


def add_arguments(parser):
    parser.add_argument("--tables", default=",".join(map(str, TABLES)), help="paper tables to run (default 1,3,4,6)")
    parser.add_argument("--families", default=",".join(FAMILIES), help="network families, in the order to run them (default indexnet,gca,dim)")
    parser.add_argument("--seeds", default="0,1,2", help="student seeds (default 0,1,2)")
    parser.add_argument("--teacher-seeds", default="0",
                        help="teacher seeds (default 0: one teacher per family). Beyond the paper: each further seed T "
                             "adds a teacher runs/FAMILY/teacher/seedT and Table 1 PPID students distilled from it "
                             "(runs/FAMILY/ppid-teacherT/seedS); the report gives PPID's gain per teacher and over teachers. "
                             "Pass it to every invocation of the plan, --report-only included")
    parser.add_argument("--budget", default="cpu_small", choices=list(BUDGETS), help="data sizes and schedule (default cpu_small)")
    parser.add_argument("--device", choices=("cpu", "cuda"),
                        help="train on this device instead of the budget's (e.g. cuda: cpu_small's schedule on a GPU); "
                             "the device is part of every run's config, so its runs are other runs: give them their own --out")
    parser.add_argument("--out", required=True, type=Path, help="the plan's folder: data, runs, tables.md, tables.json, charts")
    parser.add_argument("--iterations", type=int, help="override the budget's iterations for every run")
    parser.add_argument("--fit", type=float, metavar="SECONDS", help="choose the iterations so that all the plan's runs fit in SECONDS (from a timing probe)")
    parser.add_argument("--synth-version", type=int, default=2, choices=(1, 2), help="procedural benchmark version (default 2)")
    parser.add_argument("--only", metavar="FOLDER[,FOLDER]",
                        help="train only these runs of the plan (e.g. runs/indexnet/ppid/seed1; --dry-run lists them); "
                             "the report still covers the whole plan")
    parser.add_argument("--max-runs", type=int, help="stop after this many runs (the plan resumes on the next invocation)")
    parser.add_argument("--calibrate-ald", action="store_true",
                        help="also train the first family's seed-0 PPID student under every distill.attention_norm reading; "
                             "DIR/calibration.md compares them on the validation split")
    parser.add_argument("--gamma-test", metavar="FAMILY=GAMMA[,FAMILY=GAMMA]",
                        help="cause test (beyond the paper): also train each named family's PPID students with eq. 18's "
                             "gamma scaled by GAMMA (runs/FAMILY/ppid-gammaGAMMA/seedS); name a family twice for two gammas "
                             "(gca=6,gca=3); the report sets them beside its baseline and PPID rows. Pass it to every "
                             "invocation of the plan, --report-only included")
    parser.add_argument("--dry-run", action="store_true", help="print the runs and a time estimate from a short probe; train nothing")
    parser.add_argument("--status", action="store_true",
                        help="print each run's state (done, resume from step N, pending, retrain) at once, without "
                             "the probe; train nothing")
    parser.add_argument("--report-only", action="store_true", help="rewrite the report from the finished runs; train nothing")
    parser.add_argument("--re-evaluate", action="store_true",
                        help="evaluate the finished runs' weights on the test set again (after the evaluation gained a "
                             "field), then rewrite the report; train nothing")


def run(args):
    tables = _ints(args.tables, "tables")
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    seeds = _ints(args.seeds, "seeds")
    teacher_seeds = _ints(args.teacher_seeds, "teacher-seeds")
    if not seeds or not teacher_seeds:
        raise PpidError(f"--{'seeds' if not seeds else 'teacher-seeds'} is empty")
    if min(seeds + teacher_seeds) < 0:
        raise PpidError("seeds must be non-negative integers")
    if 0 not in teacher_seeds:
        raise PpidError("--teacher-seeds must include 0, the plan's teacher (its students are the tables' PPID rows)")
    root = args.out.resolve()
    gamma_tests = parse_gamma_tests(args.gamma_test)
    untested = sorted(set(gamma_tests) - set(families))
    if untested:
        raise PpidError(f"--gamma-test names {', '.join(untested)}, which --families does not plan")

    def plan(iterations):
        runs, settings, data = make_plan(tables, families, seeds, args.budget, iterations, args.synth_version, args.device)
        if args.calibrate_ald:
            runs = with_calibration(runs, data)
        if gamma_tests:
            runs = with_gamma_tests(runs, data, gamma_tests)
        return with_teacher_seeds(runs, settings, data, teacher_seeds), settings, data

    runs, settings, data = plan(args.iterations)
    only = _only(args.only, runs)
    if args.report_only:
        return _report(root, runs, settings, data, tables, families, seeds, teacher_seeds, args.budget)
    if args.re_evaluate:
        return _reevaluate(root, [run for run in runs if run.folder in only], runs, settings, data, tables, families, seeds, teacher_seeds, args.budget)

    if args.fit is not None:  # sizes every run of the plan: other iterations are other runs (other hashes)
        from .probe import estimate, fit_iterations

        _, step_cost, eval_cost = estimate(runs, settings)
        iterations = fit_iterations(runs, settings, args.fit, step_cost, eval_cost)
        if iterations < 50:
            raise PpidError(f"the {len(runs)} runs do not fit in {args.fit:.0f}s on this machine even at 50 iterations")
        print(f"reproduce: {iterations} iterations per run fit {len(runs)} runs in {args.fit:.0f}s "
              f"(continue this plan with --iterations {iterations})")
        runs, settings, data = plan(iterations)
    if args.dry_run or args.status:
        states = {run.folder: status(run, root) for run in runs}
        pending = [run for run in runs if states[run.folder] != "done" and run.folder in only]
        # what this invocation trains: the pending runs, and first the teachers they need retrained
        to_train = teachers_trained_first(pending, {run.folder: run for run in runs}, root) + pending
        trained = {run.folder: trained_steps(run, root) for run in to_train if states[run.folder] == "resume"}
        costs = None
        if args.dry_run:
            from .probe import estimate

            log = (lambda *_: None) if args.fit is not None else print  # --fit's probe has printed the costs
            costs = estimate(to_train, settings, log=log, trained=trained)[0] if to_train else {}
        _print_plan(runs, states, to_train, trained, settings, costs)
        return 0

    root.mkdir(parents=True, exist_ok=True)
    (root / ".gitignore").write_text(GITIGNORE)
    prepare_data(root, settings, data, workers=os.cpu_count() or 1)
    by_folder = {run.folder: run for run in runs}
    started, done_now = time.time(), 0
    for i, run in enumerate(runs, 1):
        if run.folder not in only or status(run, root) == "done" or adopt(run, root):
            continue
        if args.max_runs is not None and done_now >= args.max_runs:
            print(f"reproduce: stopping after {done_now} runs (--max-runs); run the same command again to continue")
            break
        print(f"reproduce: [{i}/{len(runs)}] {run.folder} ({status(run, root)})", flush=True)
        result = execute(run, root, by_folder)
        done_now += 1
        if "diverged" in result:
            print(f"reproduce: {run.folder}: diverged (loss NaN/inf from step {result['diverged']['step']}); "
                  "recorded in its result.json, the plan goes on", flush=True)
        else:
            sad = result["test"]["results"]["whole"]["all"]["sad"]
            print(f"reproduce: {run.folder}: {result['selection']}, test whole-image SAD {sad:.3f}, "
                  f"{result['train_wall_s']:.0f}s training", flush=True)
        _report(root, runs, settings, data, tables, families, seeds, teacher_seeds, args.budget, quiet=True)
        if args.calibrate_ald:
            write_calibration(root, calibration_runs(runs, data))
    _report(root, runs, settings, data, tables, families, seeds, teacher_seeds, args.budget)
    print(f"reproduce: {done_now} runs trained in {time.time() - started:.0f}s; report in {root / 'tables.md'}")
    return 0


def _only(text, runs):
    """The run folders --only names (all of the plan's without it); a name not in the plan is an error."""
    folders = [run.folder for run in runs]
    if text is None:
        return set(folders)
    named = [f.strip().strip("/") for f in text.split(",") if f.strip()]
    unknown = [f for f in named if f not in folders]
    if unknown or not named:
        raise PpidError(f"--only: {', '.join(unknown) or 'nothing named'} not in this plan; its runs: {', '.join(folders)}")
    return set(named)


def _reevaluate(root, chosen, runs, settings, data, tables, families, seeds, teacher_seeds, budget):
    done = [run for run in chosen if status(run, root) == "done" and divergence(run, root) is None]  # no weights to test
    skipped = []
    for i, run in enumerate(done, 1):
        print(f"reproduce: re-evaluating [{i}/{len(done)}] {run.folder}", flush=True)
        if not reevaluate(run, root):
            skipped.append(run.folder)
    if skipped:
        print(f"reproduce: kept the results of {len(skipped)} runs whose weights (or GPU) are not on this machine: "
              + ", ".join(skipped))
    return _report(root, runs, settings, data, tables, families, seeds, teacher_seeds, budget)


def _report(root, runs, settings, data, tables, families, seeds, teacher_seeds, budget, quiet=False):
    from .report import write_report

    doc = write_report(root, runs, settings, data, tables, families, seeds, budget, teacher_seeds)
    if not quiet:
        print(f"reproduce: report of {doc['runs_done']}/{doc['runs_planned']} runs: {root / 'tables.md'}")
    return 0


def _print_plan(runs, states, to_train, trained, settings, costs=None):
    """One line a run: its state, and for what this invocation would train (`to_train`, teachers to
    retrain first included) the probe's estimate (`costs`: {folder: seconds}) or, without one, the
    steps a resumed run has done (`trained`)."""
    training = {run.folder for run in to_train}
    print(f"{'run':40s} {'status':8s} {'estimate' if costs is not None else 'trained':>10s}")
    retrains = 0
    for run in runs:
        state = states[run.folder]
        if run.folder in training:
            if state == "done":  # finished, but its weights are not on this machine
                state, retrains = "retrain", retrains + 1
            if costs is not None:
                shown = f"{costs[run.folder] / 60:.1f} min"
            else:
                shown = f"{trained.get(run.folder, 0)}/{settings['iterations']}" if state == "resume" else "-"
        else:
            shown = "-" if state == "done" else "not --only"
        print(f"{run.folder:40s} {state:8s} {shown:>10s}")
    first = f" ({retrains} of them finished teachers retrained for their weights)" if retrains else ""
    done = sum(state == "done" for state in states.values())
    print(f"{len(runs)} runs, {done} done, {len(training)} to train{first}, {settings['iterations']} iterations each "
          f"at {settings['size']} px, batch {settings['batch_size']}"
          + (f": about {sum(costs.values()) / 3600:.1f} h on this machine (probe estimate)" if costs is not None else ""))
