"""The training loop, top to bottom: build, parallelize, resume, train, evaluate, save.

Components come from the recipe through the registry. The model is built first and
sharded (FSDP2) before anything that holds its parameters (the optimizer) is built;
every other component gets what it asks for injected: ``model``, the other recipe slots,
and from the runner ``world`` (ranks, device) and ``trainer`` (the trainer settings).
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch.distributed.tensor import DTensor

from llm_gym.data.batch import model_call
from llm_gym.data.indexed import DataExhausted, GlobalPosition
from llm_gym.errors import ReportedError, UserError
from llm_gym.evaluation.evaluator import Schedule, Scheduled
from llm_gym.evaluation.validation_loss import ValidationLoss
from llm_gym.hf.tokenizer_files import RUN_TOKENIZER_DIR, write_tokenizer_files
from llm_gym.model_contract import as_language_model
from llm_gym.recipes.loading import LoadedRecipe, load_recipe
from llm_gym.recipes.pins import current_pins
from llm_gym.recipes.resolved import resolved_yaml
from llm_gym.registry import ResolverRegistry
from llm_gym.registry.building import build_choice
from llm_gym.run_layout import RunLayout
from llm_gym.runner.async_checkpoint import AsyncCheckpointer
from llm_gym.runner.batch_layout import batch_layout, fixed_global_batch
from llm_gym.runner.checkpoint import (
    CheckpointWriteError,
    checkpoint_path,
    latest_checkpoint,
    load_checkpoint,
    take_snapshot,
    write_checkpoint,
)
from llm_gym.runner.data_feed import BatchFeed
from llm_gym.runner.distributed import (
    World,
    all_reduce_mean,
    broadcast_from_main,
    distributed_world,
    rank_seed,
    seed_everything,
)
from llm_gym.runner.flops import MfuMeter
from llm_gym.runner.host_memory import keep_freed_host_memory
from llm_gym.runner.memory_telemetry import MemoryTelemetry, max_over_ranks
from llm_gym.runner.mesh import data_parallel_world, tp_size, with_mesh
from llm_gym.runner.metrics import (
    MetricsLog,
    Subscribers,
    build_loggers,
    read_metrics,
)
from llm_gym.runner.nonfinite import NonfiniteGuard
from llm_gym.runner.oom import OomRecorder, oom_message
from llm_gym.runner.parallelize import clip_grad_norm_, parallelize_as_configured
from llm_gym.runner.profiling import StepProfiler
from llm_gym.runner.resume_check import ResumePlan
from llm_gym.runner.resuming import honour_changes, hyperparameters, plan_run
from llm_gym.runner.run_dir import METRICS_FILE, remove_unused_run_dir, write_segment_recipe
from llm_gym.runner.run_job import RunJob
from llm_gym.runner.run_messages import end_message, nothing_left_message, start_message
from llm_gym.runner.safety import (
    Interrupted,
    RunDirLock,
    StopRequest,
    check_room,
    checkpoint_bytes,
    human_size,
)
from llm_gym.runner.stop_agreement import StopAgreement
from llm_gym.runner.tensor_parallel import loss_takes_vocab_parallel, vocab_parallel_loss
from llm_gym.runner.token_range import out_of_vocabulary

T = TypeVar("T")


def train_worker(
    job: RunJob,
    loaded: LoadedRecipe | None = None,
    registry: ResolverRegistry | None = None,
) -> dict[str, Any]:
    """One rank of a run (the launcher's entry point; also the single-process path, which
    passes the recipe it already loaded and validated)."""
    if loaded is None or registry is None:
        registry = ResolverRegistry.from_installed_plugins()
        if job.recipe is not None:  # as the launcher resolved and checked it
            loaded = job.recipe.load(registry)
        else:  # under torchrun: each rank loads the recipe itself
            loaded = load_recipe(job.spec, job.overrides, registry=registry,
                                 recipe_dirs=job.recipe_dirs, allow_drift=job.allow_drift)
    with distributed_world() as world:
        if world.device.type == "cpu":
            keep_freed_host_memory()  # a CPU step reuses its tensors' pages (host_memory.py)
        # Under torchrun each rank picked its default run directory from its own clock.
        run_dir = broadcast_from_main(job.run_dir, world)
        lock = RunDirLock(run_dir)
        on_main(lock.__enter__, world)  # one run per directory, or every rank refuses
        trainer = None
        try:
            try:
                # Checked on rank 0 before anything is built or written.
                plan = from_main(
                    lambda: plan_run(run_dir, loaded, job.resume, job.allow_changes), world)
                if plan.nothing_left:
                    Subscribers([], main=world.rank == 0).message(
                        nothing_left_message(run_dir, plan, job, world.world_size))
                    return {"run_dir": str(run_dir), "step": plan.step,
                            "loss": _last_loss(run_dir / METRICS_FILE, plan.step)}
                trainer = Trainer(loaded, registry, world, run_dir, plan)
            except BaseException:
                # A refused run leaves no directory it created behind (its lock is held).
                if world.rank == 0 and (job.created_run_dir or lock.created):
                    remove_unused_run_dir(run_dir)
                raise
            try:
                result = trainer.fit()
            except UserError:
                # Refused at the first step (the data ran out, ids past the vocabulary):
                # nothing was trained, so a directory this run made goes, as above.
                if trainer.step == 0 and world.rank == 0 and (job.created_run_dir
                                                              or lock.created):
                    trainer.close()
                    remove_unused_run_dir(run_dir)
                raise
            trainer.metrics.message(end_message(run_dir, trainer.step, job, world.world_size,
                                                data_ran_out=result["data_ran_out"]))
            return result
        finally:
            if trainer is not None:
                trainer.close()
            if world.rank == 0:
                lock.__exit__()


def on_main(check: Callable[[], Any], world: World) -> None:
    """Run ``check`` on rank 0; if it raises a UserError, every rank raises it."""

    def checked() -> None:
        check()  # its result stays on rank 0

    from_main(checked, world)


def from_main(compute: Callable[[], T], world: World) -> T:
    """``compute()`` on rank 0, its result on every rank; a UserError it raises is raised
    on every rank (with its list of problems)."""
    outcome: tuple[Any, tuple[str, list[str]] | None] = (None, None)
    if world.rank == 0:
        try:
            outcome = (compute(), None)
        except UserError as exc:
            outcome = (None, (exc.message, exc.problems))
    value, problem = broadcast_from_main(outcome, world)
    if problem is not None:
        raise UserError(*problem)
    return value


def _last_loss(metrics: Path, step: int) -> float:
    """The last training loss recorded up to ``step``, for a run with nothing left."""
    if not metrics.is_file():
        return math.nan
    losses = [r["loss"] for r in read_metrics(metrics) if r["step"] <= step and "loss" in r]
    return losses[-1] if losses and losses[-1] is not None else math.nan


class Trainer:
    """One rank's run: built, resumed and its run directory prepared by ``__init__``
    (in that order, each a method below), trained by ``fit``."""

    def __init__(
        self,
        loaded: LoadedRecipe,
        registry: ResolverRegistry,
        world: World,
        run_dir: Path,
        plan: ResumePlan,
    ) -> None:
        self.settings = settings = loaded.recipe.trainer
        # The one mesh (trainer.parallel) that sharding, checkpoints and reductions use.
        world = with_mesh(world, settings.parallel)
        self.loaded, self.world, self.run_dir, self.plan = loaded, world, run_dir, plan
        self.main = world.rank == 0
        # Datasets and evaluators see the data-parallel ranks: the ranks of one
        # tensor-parallel group read the same samples (runner/mesh.py).
        self.data_world = data_parallel_world(world)
        # Every data-parallel rank reads its share of each step.
        self.layout = batch_layout(settings, self.data_world.world_size)
        self.stop_agreement = StopAgreement(world)  # collective: before any rank can fail
        # Collective too (a process group of its own for the writer thread).
        self.checkpointer = AsyncCheckpointer(world) if settings.async_checkpoint else None
        if self.checkpointer is not None:
            self.stop_agreement.watch_saves(self.checkpointer.failed)
        self.checkpoint_wait_s = 0.0  # training time spent on checkpoints, per record
        # From the start, so an out-of-memory snapshot shows the weights' allocations too.
        self.oom = OomRecorder(settings.memory_snapshot_on_oom, run_dir, world.rank,
                               world.device)
        self._build(registry)
        self._resume()
        self._prepare_run_dir()
        self._start_telemetry()

    def _build(self, registry: ResolverRegistry) -> None:
        """The model (sharded), then every other component with what it asks for."""
        settings, world = self.settings, self.world
        entries = self.loaded.recipe.components()
        if settings.eval_every and "eval_dataset" not in entries:
            raise UserError("trainer.eval_every is set but the recipe has no eval_dataset")
        # Same seed on every rank while building: FSDP2 shards whatever each rank holds,
        # so the initial weights must be identical everywhere.
        seed_everything(settings.seed, 0)
        with torch.device(world.device):
            model = registry.build_component_by_config(entries.pop("model"))
        self.flops_per_token = as_language_model(model).flops_per_token(settings.seq_len)
        self.vocab_size = as_language_model(model).vocab_size  # ids it embeds
        self.model = parallelize_as_configured(model, settings, world)
        seed_everything(settings.seed, world.rank)  # dropout and sampling differ per rank
        built = registry.build_components(
            entries,
            extra_kwargs={"model": self.model, "world": self.data_world, "trainer": settings})
        self.optimizer = built["optimizer"]
        self.scheduler = built.get("scheduler")
        self.loss_fn = built["loss"]
        # Cross-entropy on logits cut by vocabulary (loss parallel), where the model is cut
        # by tensor parallelism and the loss declares it can (runner/tensor_parallel.py).
        self.vocab_parallel = loss_takes_vocab_parallel(self.loss_fn, tp_size(world))
        if settings.compile:
            # The loss reads the step's largest tensor, the logits (batch x seq x vocab).
            # Compiled, its fp32 upcast, log-softmax and gradient fuse into a few passes
            # instead of writing fp32 copies of the logits to memory and back.
            self.loss_fn = torch.compile(self.loss_fn)
        self.guard = NonfiniteGuard(self.optimizer, settings.on_nonfinite, main=self.main,
                                    describe_checkpoint=self._describe_latest)
        self.tokenizer = built.get("tokenizer")
        prefetch = settings.prefetch
        if prefetch is None:  # on a CPU, reading ahead only competes with the step for cores
            prefetch = 2 if world.device.type == "cuda" else 0
        self.train_feed = BatchFeed(built["train_dataset"], settings.micro_batch_size,
                                    world.device, prefetch)
        self.evaluators = self._build_evaluators(built, self.run_dir)

    def _resume(self) -> None:
        """Room for a checkpoint first; then, resuming, the checkpoint and the changes the
        plan allowed."""
        needed = checkpoint_bytes(self.model)
        on_main(lambda: check_room(self.run_dir, needed, self.settings.keep_last), self.world)
        self.step = 0
        self.resume_warning: str | None = None
        plan = self.plan
        if plan.resumed:
            fresh = hyperparameters(self.optimizer)  # as this run's recipe builds them
            resharded = self._restore(plan.checkpoint)
            changed = honour_changes(plan, self.optimizer, self.scheduler, fresh)
            self.resume_warning = "\n".join(m for m in (resharded, changed) if m) or None
        self.start_step = self.step

    def _prepare_run_dir(self) -> None:
        """This segment's resolved recipe and the tokenizer's files (rank 0)."""
        if self.main:
            write_segment_recipe(self.run_dir, self.step, self._resolved_text(),
                                 changed=bool(self.plan.applied))
            self._save_tokenizer()

    def _start_telemetry(self) -> None:
        """Throughput, MFU, profiler, memory, and last the metrics and loggers."""
        settings, world = self.settings, self.world
        self.tokens_per_step = self.layout.global_batch_size * settings.seq_len
        # Only rank 0 reports MFU; the meter raises a peak that a step beats, so no
        # figure above 100% is ever logged (runner/flops.py says why).
        self.mfu_meter = MfuMeter(world.device, world.world_size) if self.main else None
        self.profiler = StepProfiler(settings.profile, self.run_dir, world.rank, world.device)
        self.memory = MemoryTelemetry(world.device)

        # Last, so nothing after it can fail with a live display running. Rank 0 builds
        # the loggers; a logger that cannot start (a missing extra) stops every rank.
        title = f"{self.loaded.ref.label} on {world.world_size} x {world.device.type}"
        provided = {"world": world, "trainer": settings, "run_dir": self.run_dir,
                    "start_step": self.step, "title": title}
        loggers: list = []
        on_main(lambda: loggers.extend(build_loggers(settings.loggers, provided)), world)
        self.metrics = Subscribers(
            [MetricsLog(RunLayout(self.run_dir).metrics, enabled=self.main,
                        resume_step=self.step)],
            loggers,
            main=self.main,
        )

    # -- the loop ------------------------------------------------------------------------

    def fit(self) -> dict[str, Any]:
        s = self.settings
        self.metrics.message(start_message(self.run_dir, self.plan))
        if self.resume_warning:
            self.metrics.message(self.resume_warning)
        if self.profiler.missed(self.step):
            self.metrics.message(self.profiler.missed(self.step))
        # Throughput counts training time only: evaluation and checkpoint time is excluded.
        interval_start, interval_steps, excluded = time.perf_counter(), 0, 0.0
        last_loss, ran_out = math.nan, None
        with StopRequest() as self._stop:
            while self.step < s.max_steps:
                if self.stop_agreement.agreed(self._stop.requested):
                    self._stop_on_request()
                if self.stop_agreement.save_failed:  # a background save, on some rank
                    self._finish_saves()  # raises its error, on every rank
                self.profiler.begin_step(self.step + 1)
                try:
                    loss = self._train_step()
                except DataExhausted as exc:
                    ran_out = self._data_ran_out(exc)
                    break
                except torch.cuda.OutOfMemoryError as exc:
                    raise ReportedError(oom_message(
                        self.step + 1, exc, self.oom.snapshot(), self.loaded,
                        self.world.world_size, self.run_dir)) from exc
                self.step += 1
                interval_steps += 1
                if self.step % s.log_every == 0 or self.step == s.max_steps:
                    self.guard.check(self.step)
                    elapsed = time.perf_counter() - interval_start - excluded
                    record = self._train_record(loss, interval_steps, elapsed)
                    last_loss = record["loss"]
                    self.metrics.log_train(record)
                    interval_start, interval_steps, excluded = time.perf_counter(), 0, 0.0
                paused = time.perf_counter()
                self.profiler.end_step(self.step)  # writing the trace is not training time
                self._evaluate_due()
                if s.checkpoint_every and self.step % s.checkpoint_every == 0:
                    self.save()
                excluded += time.perf_counter() - paused
        self.stop_agreement.finish()
        if ran_out is not None and self.step > self.start_step:
            # The run ends here: its last step is logged and evaluated, as at max_steps.
            if self.step % s.log_every:
                elapsed = time.perf_counter() - interval_start - excluded
                self.guard.check(self.step)
                self.metrics.log_train(self._train_record(loss, interval_steps, elapsed))
            self._evaluate_due(ended_early=True)
        if ran_out is not None:
            self.metrics.message(ran_out)
        trained = ran_out is None or self.step > self.start_step
        if trained and not (s.checkpoint_every and self.step % s.checkpoint_every == 0):
            self.save()
        self._finish_saves()  # the run's last checkpoint is complete before it ends
        self.close()
        if s.sample_prompt and self.tokenizer is not None:
            if tp_size(self.world) > 1:  # decoding runs on whole layers
                self.metrics.message(
                    "sample: not drawn under tensor parallelism (trainer.parallel.tp > 1); "
                    f"sample the checkpoint with: llm_gym generate {self.run_dir} "
                    f"--prompt {s.sample_prompt!r}")
            else:
                self.metrics.message(
                    f"sample: {self.sample(s.sample_prompt, s.sample_tokens)}")
        return {"run_dir": str(self.run_dir), "step": self.step, "loss": last_loss,
                "data_ran_out": ran_out is not None}

    def _data_ran_out(self, exc: DataExhausted) -> str:
        """The training data ended (``on_exhausted: stop``) during the next step: that
        partial step is dropped, gradients and data position back to the last full step,
        and the run ends there as at ``max_steps``. Every rank sees it at the same batch."""
        self.optimizer.zero_grad(set_to_none=True)
        if self._step_start_data is not None:  # micro-batches of the partial step were read
            self.train_feed.load_state_dict(self._step_start_data)
        if self.step == 0:
            raise UserError(f"the training data ran out before the first step: {exc}; "
                            "give the mixture more data, or on_exhausted: cycle")
        return (f"the training data ran out after step {self.step} of "
                f"{self.settings.max_steps} ({exc}); the run ends here")

    def close(self) -> None:
        """Close the metrics subscribers and stop the data thread; safe to call again."""
        self.profiler.finish()  # a run that ended inside the profiled steps keeps them
        if self.checkpointer is not None:
            self.checkpointer.close()
        self.oom.close()
        self.metrics.close()
        self.train_feed.close()

    def _train_step(self) -> torch.Tensor:
        """One optimizer step; returns the summed loss as a device tensor. With a fused
        optimizer nothing here reads a device value back to the host (runner/nonfinite.py
        says why and what other optimizers do)."""
        s, model = self.settings, self.model
        accumulation = self.layout.grad_accumulation
        model.train()
        total = torch.zeros((), device=self.world.device)
        # Where the data stood before this step, in case it runs out part way through.
        self._step_start_data = self.train_feed.state_dict() if accumulation > 1 else None
        for micro in range(accumulation):
            # Gradients are reduce-scattered only on the last micro-batch.
            if hasattr(model, "set_requires_gradient_sync"):  # absent when not sharded
                model.set_requires_gradient_sync(micro == accumulation - 1)
            # A dataset with document boundaries adds document_ids to the model's call.
            with self.profiler.phase("data"):  # named ranges while profiling only
                inputs, targets, kwargs = model_call(self.train_feed.next())
            with self.profiler.phase("forward_backward"), \
                    vocab_parallel_loss(self.vocab_parallel):
                try:
                    logits = model(inputs, **kwargs)
                except IndexError as exc:  # an id past the embedding: say it is the data's
                    found = out_of_vocabulary(inputs, self.vocab_size, self.step + 1)
                    raise (found or exc) from exc
                loss = self.loss_fn(logits, targets) / accumulation
                loss.backward()
            total += _local(loss.detach())
        with self.profiler.phase("optimizer"):
            # The same global norm on every rank, so every rank skips the same steps.
            grad_norm = clip_grad_norm_(model.parameters(), s.grad_clip or math.inf)
            # The rate this step trains with: the scheduler moves it on for the next step.
            self._step_lr = self.optimizer.param_groups[0]["lr"]
            self.guard.step(grad_norm, self.step + 1)
            if self.scheduler is not None:
                self.scheduler.step()
        return total

    def _train_record(self, loss: torch.Tensor, steps: int, elapsed: float) -> dict[str, Any]:
        tokens_per_s = self.tokens_per_step * steps / elapsed if elapsed > 0 else None
        waited, self.train_feed.wait_seconds = self.train_feed.wait_seconds, 0.0
        by_source = self.train_feed.tokens_by_source()  # a mixture's, cumulative
        mfu = peak_note = None
        if self.mfu_meter is not None:
            mfu = self.mfu_meter.mfu(tokens_per_s, self.flops_per_token)
            peak_note = self.mfu_meter.take_note()
            if peak_note:
                self.metrics.message(f"note: {peak_note}")
        return {
            "step": self.step,
            "loss": all_reduce_mean(loss, self.world).item(),
            "lr": self._step_lr,
            "grad_norm": self.guard.last_norm,
            "tokens_per_s": tokens_per_s,
            "mfu": mfu,
            "data_wait_pct": 100 * waited / elapsed if elapsed > 0 else None,
            "checkpoint_wait_s": self._take_checkpoint_wait(),
            "tokens": self.step * self.tokens_per_step,
            **max_over_ranks(self.memory.record(), self.world.world_size, self.world.device),
            **({"tokens_by_source": by_source} if by_source is not None else {}),
            **({"peak_raised": peak_note} if peak_note else {}),
        }

    # -- evaluation ------------------------------------------------------------------------

    def _build_evaluators(self, built: dict[str, Any], run_dir: Path) -> Schedule:
        """``trainer.eval_every``'s validation loss, then ``trainer.evaluators``, built on
        every rank (each scores its share of the examples)."""
        s, world = self.settings, self.data_world
        scheduled = []
        if s.eval_every:
            validation = ValidationLoss(built["eval_dataset"], self.loss_fn, s.eval_batches,
                                        s.micro_batch_size, world)
            scheduled.append(Scheduled("validation", s.eval_every, validation,
                                       on_error="stop", legacy_keys=True))
        provided = {"world": world, "trainer": s, "loss": self.loss_fn, "run_dir": run_dir,
                    **{k: built[k] for k in ("tokenizer", "eval_dataset") if k in built}}
        for choice in s.evaluators:
            c = choice.config
            scheduled.append(Scheduled(c.name, c.every, build_choice(choice, provided),
                                       on_error=c.on_error))
        return Schedule(scheduled, s.max_steps)

    def _evaluate_due(self, *, ended_early: bool = False) -> None:
        """Run the evaluators due at this step and log their records. A stop (Ctrl-C,
        SIGTERM) requested meanwhile is honoured between batches: the ranks agree there,
        so a stop waits for one batch, never for a whole evaluation."""
        stop = getattr(self, "_stop", None)

        def should_stop() -> bool:
            return stop is not None and self.stop_agreement.agreed(stop.requested)

        records = self.evaluators.run(self.step, self.model, should_stop,
                                      self.metrics.message, ended_early=ended_early)
        if records is None:
            self._stop_on_request()
        for record in records:
            self.metrics.log_eval(record)

    @torch.no_grad()
    def sample(self, prompt: str, max_new_tokens: int) -> str:
        """Continue ``prompt``; every rank generates (FSDP needs all), rank 0 prints."""
        self.model.eval()
        ids = torch.tensor([self.tokenizer.encode(prompt)], device=self.world.device)
        generator = torch.Generator(device=self.world.device).manual_seed(self.settings.seed)
        out = self.model.generate(
            ids, max_new_tokens, temperature=0.8, top_k=40, generator=generator
        )
        return prompt + self.tokenizer.decode(out[0, ids.shape[1] :].tolist())

    # -- stopping safely ------------------------------------------------------------------

    def _stop_on_request(self) -> None:
        self.stop_agreement.finish()
        self._finish_saves()  # a stop waits for the save in flight
        resume = f"continue with the same command and --run-dir {self.run_dir} --resume"
        if self.step == self.start_step and self.plan.resumed:
            # Nothing trained since the resume: that checkpoint is this state, and a
            # segment writes checkpoints only past its start (run_dir.checkpoint_recipe).
            where = f"nothing trained since {self.plan.checkpoint}"
        elif self.step == 0:
            where = "nothing trained yet, so no checkpoint was written"
            resume = f"start again with the same command and --run-dir {self.run_dir}"
        elif self.settings.checkpoint_on_interrupt:
            where = f"checkpoint saved to {self.save(wait=True)}"
        else:
            where = "no checkpoint written (trainer.checkpoint_on_interrupt is off)"
            latest = latest_checkpoint(self.run_dir)
            resume = (f"continue from {latest} with the same command and --run-dir "
                      f"{self.run_dir} --resume" if latest else
                      f"start again with the same command and --run-dir {self.run_dir}")
        raise Interrupted(f"interrupted at step {self.step}; {where}; {resume}")

    def _describe_latest(self) -> str:
        latest = latest_checkpoint(self.run_dir)
        return f"The newest checkpoint, {latest}, is intact. " if latest else ""

    # -- checkpoints -----------------------------------------------------------------------

    def save(self, *, wait: bool = False) -> Path:
        """Checkpoint this step; return where it is (or will be, once a background save,
        ``trainer.async_checkpoint``, is done; ``wait`` waits for that)."""
        self._finish_saves()  # at most one in flight
        self.guard.check(self.step)  # never save past a step the guard would stop at
        # The divergence guard keeps weights finite; this makes sure no path around it
        # ever turns a good checkpoint directory into a poisoned one.
        if not self._weights_finite():
            raise UserError(f"step {self.step}: the weights are not finite; not saving them")
        extra = {"step": self.step, "train_data": self.train_feed.state_dict()}
        if self.scheduler is not None:
            extra["scheduler"] = self.scheduler.state_dict()
        s, started = self.settings, time.perf_counter()
        try:
            snapshot = take_snapshot(model=self.model, optimizer=self.optimizer,
                                     world=self.world, extra=extra)
            if self.checkpointer is None:
                return write_checkpoint(self.run_dir, self.step, snapshot, world=self.world,
                                        keep_last=s.keep_last)
            # Copied to host memory here; written by the checkpointer's thread.
            self.checkpointer.save(self.run_dir, self.step, snapshot, s.keep_last)
        except CheckpointWriteError as exc:
            raise ReportedError(self._save_failed(str(exc), self.step)) from exc
        finally:
            self.checkpoint_wait_s += time.perf_counter() - started
        if wait:
            self._finish_saves()
        return checkpoint_path(self.run_dir, self.step)

    def _finish_saves(self) -> None:
        """Wait for the background save in flight (if any); a failed one stops the run."""
        if self.checkpointer is None:
            return
        step, started = self.checkpointer.step, time.perf_counter()
        try:
            self.checkpointer.wait()
        except CheckpointWriteError as exc:
            raise ReportedError(self._save_failed(str(exc), step)) from exc
        finally:
            self.checkpoint_wait_s += time.perf_counter() - started

    def _take_checkpoint_wait(self) -> float:
        waited, self.checkpoint_wait_s = self.checkpoint_wait_s, 0.0
        return round(waited, 6)

    def _save_failed(self, cause: str, step: int | None) -> str:
        root = RunLayout(self.run_dir).checkpoints
        free = shutil.disk_usage(root if root.exists() else self.run_dir).free
        latest = latest_checkpoint(self.run_dir)
        kept = (f"the newest complete checkpoint, {latest}, is intact" if latest
                else "no earlier checkpoint exists")
        return (f"step {step}: writing the checkpoint failed ({cause}); the partial "
                f"one was removed and {kept}. {human_size(free)} free under {root}, "
                f"a checkpoint takes about {human_size(checkpoint_bytes(self.model))}: "
                "make room, then continue with the same command and "
                f"--run-dir {self.run_dir} --resume")

    def _weights_finite(self) -> bool:
        """True on every rank iff every rank's shard of every parameter is finite."""
        local = [p.to_local() if isinstance(p, DTensor) else p for p in self.model.parameters()]
        ok = torch.tensor([float(all(bool(torch.isfinite(p).all()) for p in local))],
                          device=self.world.device)
        if self.world.world_size > 1:
            torch.distributed.all_reduce(ok, op=torch.distributed.ReduceOp.MIN)
        return bool(ok.item())

    def _restore(self, path: Path) -> str | None:
        """Load ``path``; on another world size than the one that wrote it, say so."""
        elastic = (fixed_global_batch(self.settings) is not None
                   and isinstance(self.train_feed.dataset, GlobalPosition))
        extra = load_checkpoint(path, model=self.model, optimizer=self.optimizer,
                                world=self.world, elastic=elastic)
        self.step = int(extra["step"])
        self.train_feed.load_state_dict(extra["train_data"])
        if self.scheduler is not None and "scheduler" in extra:
            self.scheduler.load_state_dict(extra["scheduler"])
        if "resharded_from" not in extra:
            return None
        # The old ranks' random states cannot be dealt out to a new number of ranks:
        # derive them from the seed and the step instead, the same on every resume.
        seed_everything(rank_seed(self.settings.seed, self.step), self.world.rank)
        return (f"resumed on {self.world.world_size} process(es) from a checkpoint written "
                f"by {extra['resharded_from']}: model and optimizer resharded, the data "
                f"position is global ({self.layout.global_batch_size} sequences per step, "
                f"{self.layout.grad_accumulation} micro-batch(es) of "
                f"{self.layout.micro_batch_size} per rank), random states derived from "
                "trainer.seed and the step")

    def _save_tokenizer(self) -> None:
        """``RUN_DIR/tokenizer/``: the tokenizer as Hugging Face files, where it has that
        form, so generate and export rebuild it anywhere (see runner/loading_model.py)."""
        if getattr(self.tokenizer, "hf_tokenizer", None) is None:
            return
        directory = self.run_dir / RUN_TOKENIZER_DIR
        directory.mkdir(exist_ok=True)
        write_tokenizer_files(self.tokenizer, directory, name=None,
                              max_length=self.settings.seq_len)

    def _resolved_text(self) -> str:
        header = f"# {self.loaded.ref.label} from {self.loaded.ref.path}\n"
        if self.plan.resumed:
            header += (f"# the segment resumed from {self.plan.checkpoint} (written under "
                       f"{self.plan.checkpoint_recipe.name}), changing:\n")
            header += "".join(f"#   {change}\n" for change in self.plan.applied)
        header += "# pins of the installed components this run used:\n"
        pins = "".join(f"#   {k}: {v}\n" for k, v in current_pins(self.loaded.recipe).items())
        return header + pins + resolved_yaml(self.loaded)


def _local(value: torch.Tensor) -> torch.Tensor:
    """A loss computed under loss parallel is a replicated DTensor: its local value."""
    return value.to_local() if isinstance(value, DTensor) else value
