"""How to read bench/RESULTS.md (appended under its tables by bench/run.py)."""

NOTES = """\
## How to read this

* `bench/results.json` holds every figure of one run of `python bench/run.py` (`make bench`):
  one entry per named figure (value, target, `met` / `missed` / `reported` / `error`, the
  numbers behind it and, when missed, the measured reason), `run` (when, where, how long,
  the load average) and `rows` (every row below). This file is rendered from it.
  `python bench/run.py --only KEY,...` runs single parts (figure keys or part names) and
  never rewrites either file.
* **This machine is shared** with other engineers running tests while the bench runs, so
  timings are noisy: a ratio within a few percent of its target can flip between runs, and
  absolute seconds (plan, report, fixed cost) are slower than on an idle machine. The load
  average at the end of the run is in results.json.
* Step timings (BKD step overhead, our step vs plain spikingjelly): the median of
  interleaved steps (each round times every variant once, in a rotating order; 7 rounds,
  21 for the quickstart pair, fewer when a round is slow: at least 5) after 2 warm-up
  steps, `torch.set_num_threads(2)`, one fixed batch. `none+teacher` is a mode-none
  step plus the frozen teacher's forward, so `mixed/(none+teacher)` is what BKDSNN itself
  adds. "Ours" is DistillationModel + DistillLoss(mode none) built and stepped as run_trial
  does it (the student's training layout, channels-last for the convolutional students;
  `make_optimizer`'s fused AdamW; `train_step`); "plain" is the textbook loop a user writes:
  forward, cross-entropy, backward, `torch.optim.AdamW` step, `functional.reset_net`, same
  initial weights. "Ours with train.compile: true" is the same through `torch.compile`
  (inductor, this machine's C++ compiler), its compilation timed apart. Each
  timing carries two cross-checks (median per-round ratio, ratio of the fastest steps); a
  timing whose cross-checks disagree by more than 5% is repeated (up to 3 times).
* Pruning and seed promotion run the real engine (`run_study`: embedded Ray Tune, the Optuna
  journal, TPE, the study's pruner, seed units) with a **synthetic trial function**
  (`bench/synthetic.py`): per configuration a noisy learning curve (a plateau from a
  log-learning-rate bowl, a blur-ratio optimum, a weak beta effect and an unexplained offset;
  a learning speed that grows with the learning rate, so curves cross; per-seed offsets and
  per-epoch noise), 0.02 s a synthetic epoch, one trial at a time. The figures are epochs
  run and the best validation top-1, so they measure the engine's decisions, not CPU speed,
  and a run is reproducible (fixed sampler seed, one trial at a time: the same trials report
  in the same order; Hyperband assigns a trial to a bracket by a hash of the study name and
  trial number, so the bench's study names are fixed). Pruning pools eight TPE runs (sampler
  seeds 0-7); each run is luck (one run's top-1 loss has sd ~1.1 points), so the row also
  gives the expectation those runs estimate: the same study replayed with Optuna alone over
  200 sampler seeds (`bench/pruning_sim.py`, which also places other pruner settings on the
  front of epochs saved against top-1 lost).
  Seed promotion is measured against the same engine with every configuration's seeds
  queued at once (the SweepBook with that one change), same pruner and trial budget.
* Fixed cost per trial: 24 trivially short trials (one synthetic epoch, no sleep) with the
  real tracking (MLflow + Parquet), 2 at a time, Ray already up; the figure is the steady
  state: wall x concurrency from the 4th trial's finish to the last, minus the trial
  functions' own seconds (their report calls are the engine's), per trial. The sweep's own
  start (run_study until the first trial finished: Tune, the first workers' imports) and
  Ray's start are once per sweep, reported beside it (named figures without a target).
* bkd-sweep vs plain Ray Tune: the issue's 16 quickstart trials (4 modes x T 2, 4 x seeds
  0, 1) x 2 epochs, 2 at a time, each side starts and stops its own Ray, rounds interleaved
  (a second round only when the part's time has room), the teacher trained into the shared
  cache first.
* Sweep efficiency: the quickstart study with seeds [0, 1] (16 trials, as in the issue)
  through `run_study`, results in a temp dir; the sweep wall includes Ray's start and
  shutdown; trial seconds are trials.parquet `wall_seconds`; "teacher wait counted": the
  engine trains the teacher as a Tune trial of its own before the trials that need it (the
  trials that need none run beside it; its actor is then reused by the next trial); no trial
  waits on it. Busy seconds are the trials' plus the
  teacher's training (as when a trial trained it, under a lock, and the row subtracted the
  most a concurrent trial could have waited); the trials-only ratio is the row above it.
  Idle time is split per slot (trials put on slots as Tune reuses actors): before each
  slot's first trial, after its last, and between.
* Costs at scale: a synthetic 10,000-trial x 300-epoch results set
  (`bench/studies/scale_10k.yaml`) written through `ResultStore.upsert`; when upserts grow
  with the study, the sizes past a 2-minute build budget are written in one go in the
  store's own layout (its row functions, checked by reading back through the public API)
  and real upserts are timed on them (said in the row). `bkd-sweep results` / `report` /
  `plan` are timed as a user runs them (fresh process, imports included); a missed target
  carries a cProfile breakdown. The sweep driver's epoch cost uses the engine's SweepBook,
  scheduler and searcher on an Optuna journal holding 10 or 10,000 finished trials.
* Memory (optional, when the budget has room): peak RSS growth over one fresh process per T
  while it runs two training steps.
"""
