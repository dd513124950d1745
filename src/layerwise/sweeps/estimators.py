"""Cheap predictors of a sweep's layer contribution C(k), and how well each one predicts it.

A per-block sweep costs L+1 training runs. Three estimators cost far less:
- `metric`: any per-block diagnostics metric (`layerwise diagnose`), oriented so that higher means
  more important; no training at all.
- `delta`: one full training run. For each block k, the base model with only block k's update
  (theta_full - theta_base, block k only) applied is scored on the task: S'_k, and
  C'(k) = (S'_k - S_base) / (S_full - S_base). Costs one run plus L evaluations.
- `gradient`: at the start of training, the squared norm of the training objective's gradient
  restricted to block k, ||g_k||^2: to first order, the loss decrease one SGD step on block k
  alone can buy (lr * ||g_k||^2). For RL methods the objective is the group-normalised
  (GRPO-style) reward-weighted log-likelihood of the model's own samples, scored by the task;
  for SFT the loss on the task's targets. Costs one forward and backward pass. From the same
  pass, `adam-gain` = ||g_k||_1 (Adam's first step is lr * sign(g)); with one more backward pass
  on held-out prompts, `adam-val` = <v_k, sign(g_k)>, the held-out loss drop of that step.
  Over several batches, `adam-snr` = sum mu^2 / sqrt(mean g^2): Adam's expected per-step drop.
- `probe`: a few AdamW steps on block k alone, from the cached input of block k (the frozen
  prefix runs once for all blocks), scored by the drop of a held-out loss.
- `profile`: a few real single-block runs cut short — P blocks evenly spaced over depth, each
  trained alone for s steps exactly as a sweep run trains (the same trainer, batch size and rate,
  fresh batches), scored by their training signal over steps s/2..s (SFT: minus the loss; RL: the
  reward) and interpolated linearly over depth to every block. On the arithmetic ground truth the
  ranking of C(k) appears in single-block training only after 10-30 steps, later than anything
  measured at step 0 (docs/results/groundtruth.md); P runs of s steps is what that costs.
  `profile:logp` scores the same runs another way: the gain, over the base model, of the mean
  per-token log-likelihood of the task's reference answers on 64 training prompts drawn with
  another seed than the runs' batches (on a small task the runs have seen them too: it measures
  the fit to the training distribution, as the reward does). Deterministic given the model (no
  sampling), where an RL run's reward is the mean of sampled completions.
- `prior:*` (`depth_priors`): no measurement at all, only each block's depth — `prior:mid`
  ranks blocks by closeness to the middle (the "mid-k" strategy), `prior:shallow` the first block
  first. The reference an estimator has to beat: where C(k) simply falls with depth, an estimator
  that only sees depth looks good.
Each estimator is compared with the measured C(k) by Spearman's rho (`agreement`).
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from layerwise.diagnostics.agreement import importance_scores, spearman
from layerwise.evaluation.generation import ensure_pad_token, generate_texts
from layerwise.evaluation.task_eval import evaluate_task
from layerwise.models.arch import discover_layers
from layerwise.tasks.base import Task, sft_examples
from layerwise.training.methods import get_method


def metric_estimates(diagnostics: dict) -> dict[str, list[float | None]]:
    """Every oriented diagnostics field, per block (higher = more important)."""
    return {f"metric:{k}": v for k, v in importance_scores(diagnostics).items()}


# the profile's runs train on the task's items drawn with this seed offset, so that their batches
# are none of a sweep seed's (sweeps use seeds 0, 1, ...): an estimate, not a replay of the sweep
PROFILE_SEED_OFFSET = 100


def profile_blocks(num_blocks: int, probes: int) -> list[int]:
    """`probes` blocks evenly spaced from the first to the last (fewer on a shallower model)."""
    if probes < 2:
        raise ValueError(f"the profile needs at least 2 blocks to interpolate (got {probes})")
    if num_blocks == 1:
        return [0]
    return sorted({round(i * (num_blocks - 1) / (probes - 1)) for i in range(probes)})


def profile_estimates(loaded, template: dict, *, probes: int, steps: int, seed: int = 0,
                      model: str | None = None, base: dict | None = None,
                      answer_prompts: int = 64, seconds: dict[str, float] | None = None,
                      info: dict | None = None) -> dict[str, list[float]]:
    """`profile` and `profile:logp`: train each of `profile_blocks(L, probes)` alone for `steps`
    steps with the real training path (`layerwise.training.runner.train`, the TrainConfig
    `template` of one of the sweep's single-block runs: its method, task, rate, batch size) on a
    copy of `loaded`, score each by the mean training signal of steps steps/2..steps (SFT: minus
    the loss; RL: the reward) -> `profile`, and by the gain in mean per-token log-likelihood of
    the task's reference answers on `answer_prompts` training prompts (drawn with another seed
    than the runs' batches) over the base model -> `profile:logp`; both interpolated linearly
    over depth. `profile:logp` is left out when the task has no reference answers (or
    `answer_prompts` is 0). The runs evaluate one held-out item only (their score is not used);
    `model` is the model spec `loaded` came from, `base` (the sweep's base scores) spares scoring
    the base model again.

    `info`, when given, receives the probed blocks, their scores, the signal's name and each
    run's median step seconds (`step_seconds`: the profile's cost counted in its own steps, so it can
    be put in single-block runs at the speed the machine had then).
    """
    import copy
    import dataclasses

    from layerwise.training.config import TrainConfig
    from layerwise.training.result import Scores
    from layerwise.training.runner import train

    if steps < 2:
        raise ValueError(f"the profile needs at least 2 steps per block (got {steps})")
    start = time.perf_counter()
    num_blocks = discover_layers(loaded.model).num_blocks
    blocks = profile_blocks(num_blocks, probes)
    key = "reward" if get_method(template.get("method", "sft")).is_rl else "loss"
    sign = -1.0 if key == "loss" else 1.0
    configs = [TrainConfig(**{**template, "layers": str(b), "full": False, "steps": steps,
                              "seed": PROFILE_SEED_OFFSET + seed, "eval_n": 1,
                              "general_seqs": 1, "general_seq_len": 32, "out": None,
                              "progress": False, "eval_every": None, "save_every": None})
               for b in blocks]
    from layerwise.tasks.registry import prepare_task

    task = prepare_task(configs[0].make_task(), loaded.tokenizer)
    pairs = _answer_pairs(task, answer_prompts, PROFILE_SEED_OFFSET + seed + 1) if answer_prompts > 0 else []
    ensure_pad_token(loaded.tokenizer)
    base_logp = _answer_logp(loaded.model, loaded.tokenizer, pairs) if pairs else None
    scores, logp_gains, step_seconds = [], [], []
    for b, config in zip(blocks, configs):
        copy_ = dataclasses.replace(loaded, model=copy.deepcopy(loaded.model))
        result = train(config, model, loaded=copy_,
                       base=Scores.from_dict(base) if base else None)
        if result.status != "completed":
            raise RuntimeError(f"profile run of block {b} {result.status}: {result.failure}")
        vals = [h[key] for h in result.history
                if isinstance(h.get(key), (int, float)) and steps / 2 < h.get("step", 0) <= steps]
        if not vals:
            raise RuntimeError(f"profile run of block {b} logged no {key!r} in steps "
                               f"{steps // 2 + 1}..{steps}")
        scores.append(sign * sum(vals) / len(vals))
        step_seconds.append(result.step_seconds_median)
        if pairs:  # the run trained copy_.model in place
            logp_gains.append(_answer_logp(copy_.model, loaded.tokenizer, pairs) - base_logp)
        del copy_
    # linear between the probed blocks, constant beyond the first and the last
    out = {"profile": [float(v) for v in np.interp(range(num_blocks), blocks, scores)]}
    if pairs:
        out["profile:logp"] = [float(v) for v in np.interp(range(num_blocks), blocks, logp_gains)]
    if info is not None:
        info.update({"blocks": blocks, "scores": scores, "signal": key, "steps": steps,
                     "seed": PROFILE_SEED_OFFSET + seed, "answer_prompts": len(pairs),
                     "base_answer_logp": base_logp, "answer_logp_gains": logp_gains or None,
                     "step_seconds": step_seconds})
    if seconds is not None:
        seconds["profile"] = time.perf_counter() - start
        if pairs:  # the same runs, scored once more
            seconds["profile:logp"] = seconds["profile"]
    return out


def _answer_pairs(task: Task, n: int, seed: int) -> list[tuple[str, str]]:
    """Up to `n` distinct (prompt, reference answer) training pairs, or none where the task has
    no reference answers (an SFT target of its own)."""
    try:
        pairs = sft_examples(task, "train", n, seed)
    except Exception:  # noqa: BLE001 - a task without SFT targets: no answers to score
        return []
    seen, out = set(), []
    for p, c in pairs:
        if c and p not in seen:
            seen.add(p)
            out.append((p, c))
    return out


@torch.no_grad()
def _answer_logp(model, tokenizer, pairs: list[tuple[str, str]], batch_size: int = 16) -> float:
    """The mean, over `pairs`, of the mean per-token log-likelihood of the answer given its prompt
    (right-padded batches, eval mode; the model's mode is restored)."""
    was_training = model.training
    model.eval()
    layers = discover_layers(model)
    try:
        total = 0.0
        for i in range(0, len(pairs), batch_size):
            chunk = pairs[i:i + batch_size]
            batch = _padded_batch(model, tokenizer, [p for p, _ in chunk], [c for _, c in chunk],
                                  [1.0] * len(chunk))
            total -= float(_batch_loss(model, layers, batch, 0, None))
        return total / len(pairs)
    finally:
        model.train(was_training)


def depth_priors(num_blocks: int) -> dict[str, list[float]]:
    """`prior:mid` (minus the distance of block k from the middle of depth, (L-1)/2) and
    `prior:shallow` (-k): what ranking blocks by depth alone predicts, at no cost."""
    if num_blocks < 1:
        raise ValueError(f"num_blocks must be >= 1 (got {num_blocks})")
    middle = (num_blocks - 1) / 2
    return {"prior:mid": [-abs(k - middle) for k in range(num_blocks)],
            "prior:shallow": [-float(k) for k in range(num_blocks)]}


def metric_seconds(diagnostics: dict) -> dict[str, float]:
    """{"metric:FIELD": seconds of the diagnostics metric that wrote FIELD, as `diagnose`
    recorded them}: a field's cost is its own metric's, not the whole diagnostics run's; a metric
    without a recorded time falls back to the whole run's (the "metric" key)."""
    out: dict[str, float] = {}
    for metric in (diagnostics.get("metrics") or {}).values():
        if not isinstance(metric, dict) or metric.get("seconds") is None:
            continue
        for field in metric.get("fields") or {}:
            out[f"metric:{field}"] = float(metric["seconds"])
    whole = float(diagnostics.get("seconds") or diagnostics.get("wall_seconds") or 0.0)
    if whole:
        out["metric"] = whole
    return out


@torch.no_grad()
def delta_estimates(base_model, tuned_model, tokenizer, task: Task, eval_n: int,
                    s_base: float, s_full: float, batch_size: int = 32) -> list[float]:
    """C'(k) for each block: the base model with only block k's update from the full run."""
    ensure_pad_token(tokenizer)
    base_layers, tuned_layers = discover_layers(base_model), discover_layers(tuned_model)
    if base_layers.num_blocks != tuned_layers.num_blocks:
        raise ValueError("the tuned model has a different number of blocks than the base")
    out = []
    for k in range(base_layers.num_blocks):
        block, tuned = base_layers.blocks[k], tuned_layers.blocks[k]
        saved = {n: p.detach().clone() for n, p in block.named_parameters()}
        tuned_params = dict(tuned.named_parameters())
        try:
            for n, p in block.named_parameters():
                p.copy_(tuned_params[n].to(p.dtype))
            s_k = evaluate_task(base_model, tokenizer, task, n=eval_n, seed=0,
                                batch_size=batch_size).accuracy
        finally:
            for n, p in block.named_parameters():
                p.copy_(saved[n])
        denom = s_full - s_base
        out.append((s_k - s_base) / denom if denom else math.nan)
    return out


def _completion_logprob_loss(model, tokenizer, prompts: list[str], completions: list[str],
                             weights: list[float]) -> torch.Tensor:
    """sum_i w_i * mean-token NLL of completion i given prompt i (a differentiable scalar)."""
    device = next(model.parameters()).device
    total = torch.zeros((), device=device)
    for prompt, completion, w in zip(prompts, completions, weights):
        if w == 0 or not completion:
            continue
        p_ids = tokenizer(prompt, return_tensors="pt")["input_ids"].to(device)
        c_ids = tokenizer(completion, add_special_tokens=False, return_tensors="pt")["input_ids"].to(device)
        if c_ids.shape[1] == 0:
            continue
        ids = torch.cat([p_ids, c_ids], dim=1)  # (1, T)
        logits = model(input_ids=ids, use_cache=False).logits[:, :-1].float()  # (1, T-1, V)
        logp = torch.log_softmax(logits, dim=-1)
        target = ids[:, 1:]
        token_logp = logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)[:, p_ids.shape[1] - 1:]
        total = total - w * token_logp.mean()
    return total


def gradient_estimates(model, tokenizer, task: Task, method: str, n_prompts: int = 8,
                       num_generations: int = 8, max_new_tokens: int | None = None,
                       temperature: float = 1.0, seed: int = 0) -> list[float]:
    """||g_k||^2 per block of the method's objective at the start of training."""
    return gradient_norms(model, tokenizer, task, method, n_prompts, num_generations,
                          max_new_tokens, temperature, seed)["gradient"]


def gradient_norms(model, tokenizer, task: Task, method: str, n_prompts: int = 8,
                   num_generations: int = 8, max_new_tokens: int | None = None,
                   temperature: float = 1.0, seed: int = 0, validate: bool = False,
                   seconds: dict[str, float] | None = None, batches: int = 1) -> dict[str, list[float]]:
    """Estimators from the method's objective gradient g at the start of training:

    - `gradient`: ||g_k||_2^2, the loss drop one SGD step on block k alone buys (lr ||g_k||^2);
    - `adam-gain`: ||g_k||_1, the same for Adam, whose first update is lr * sign(g) (the moments
      are g and g^2 after one step, bias-corrected), so the predicted drop is lr * sum |g|;
    - with `validate`, `adam-val`: <v_k, sign(g_k)>, the drop of a *held-out* loss that Adam's
      first step on block k alone buys (first order), where v is the gradient of the SFT loss of
      the task's reference answers on other prompts than g's. It asks whether the step moves
      the block towards right answers on prompts it did not see, where adam-gain only asks how
      large the step is; for RL methods it checks the reward-weighted direction against the
      reference answers. One more backward pass.
    - with `batches` > 1, `adam-snr`: sum_i mu_i^2 / sqrt(s_i) over block k's entries, where mu
      and s are the mean of g and of g^2 over `batches` independent batches of `n_prompts`. After a
      few steps Adam's update is about lr * m/sqrt(v) ~ lr * mu/sqrt(s), so this is the expected
      first-order loss drop per step of Adam on block k alone: entries whose gradient is mostly
      batch-to-batch noise (|mu| << sqrt(s)) count for little, where adam-gain (one batch, |g|)
      counts noise as gain. `gradient` and `adam-gain` then use the mean gradient mu, and
      adam-val sign(mu). Each batch is one more backward pass (and, for RL, one more sampling).
    `seconds`, when given, receives each estimator's own cost: `gradient` and `adam-gain` the
    first batch (sampling included; all batches when `batches` > 1), `adam-snr` all batches,
    `adam-val` those and the held-out pass.
    """
    if batches < 1:
        raise ValueError(f"batches must be >= 1 (got {batches})")
    start = time.perf_counter()
    ensure_pad_token(tokenizer)
    layers = discover_layers(model)
    torch.manual_seed(seed)
    seen: set[str] = set()
    mean = sq = None
    for b in range(batches):
        # batch b draws its prompts with seed + 7919 b: the batches are independent draws
        prompts, completions, weights = _objective_batch(model, tokenizer, task, method,
                                                         n_prompts, num_generations,
                                                         max_new_tokens, temperature,
                                                         seed + 7919 * b)
        seen.update(prompts)
        grads = _block_gradients(model, tokenizer, layers, prompts, completions, weights)
        if mean is None:
            mean = [[g / batches for g in block] for block in grads]
            sq = [[g.pow(2) / batches for g in block] for block in grads] if batches > 1 else None
        else:
            for mb, sb, gb in zip(mean, sq, grads):
                for m, s2, g in zip(mb, sb, gb):
                    m.add_(g, alpha=1.0 / batches)
                    s2.addcmul_(g, g, value=1.0 / batches)
    out = {"gradient": [sum(float(g.pow(2).sum()) for g in block) for block in mean],
           "adam-gain": [sum(float(g.abs().sum()) for g in block) for block in mean]}
    if batches > 1:
        out["adam-snr"] = [sum(float((m.pow(2) / s2.sqrt().clamp_min(1e-30)).sum())
                               for m, s2 in zip(mb, sb)) for mb, sb in zip(mean, sq)]
    if seconds is not None:
        seconds["gradient"] = seconds["adam-gain"] = time.perf_counter() - start
        if batches > 1:
            seconds["adam-snr"] = seconds["gradient"]
    if validate:
        # other prompts than g's: the next seed's draw, without the prompts g already used
        held = _held_out_pairs(task, n_prompts, seed, seen, "the gradient used: adam-val")
        val = _block_gradients(model, tokenizer, layers, [p for p, _ in held],
                               [c for _, c in held], [1.0] * len(held))
        out["adam-val"] = [sum(float((v * g.sign()).sum()) for v, g in zip(vb, gb))
                           for vb, gb in zip(val, mean)]
        if seconds is not None:
            seconds["adam-val"] = time.perf_counter() - start
    return out


def probe_gains(model, tokenizer, task: Task, method: str, lr: float, steps: int = 4,
                n_prompts: int = 8, num_generations: int = 8, max_new_tokens: int | None = None,
                temperature: float = 1.0, seed: int = 0, weight_decay: float = 0.0,
                seconds: dict[str, float] | None = None, info: dict | None = None,
                share_prefix: bool = True) -> list[float]:
    """`probe`: for each block k, train block k alone for `steps` AdamW steps (lr `lr`) on one
    batch of the method's objective (as `gradient_norms` draws it with `seed`) and measure the drop
    of a held-out loss: the SFT loss of the task's reference answers on other prompts (the
    next seed's draw, as for adam-val). A short single-block run per block, L of them, with what
    is the same for all of them done once: the objective's batch (and, for RL, its sampling) is
    drawn once, and the frozen prefix's forward pass (blocks 0..k-1 never change while block k is
    probed) is run once for every k: the probe of block k starts from the cached input of block k
    and runs blocks k..L-1 only. The model is restored bit for bit after each block's probe.

    `info`, when given, receives `prefix_cache`: whether the cached-prefix forward was used (it
    is checked against the full forward first; a model whose forward does not take the block
    input as `inputs_embeds` falls back to full forwards, same values, no saving;
    `share_prefix=False` forces that).
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1 (got {steps})")
    start = time.perf_counter()
    ensure_pad_token(tokenizer)
    layers = discover_layers(model)
    torch.manual_seed(seed)
    prompts, completions, weights = _objective_batch(model, tokenizer, task, method, n_prompts,
                                                     num_generations, max_new_tokens,
                                                     temperature, seed)
    seen = set(prompts)
    held = _held_out_pairs(task, n_prompts, seed, seen, "the probe trains on: its held-out loss")
    train = _padded_batch(model, tokenizer, prompts, completions, weights)
    test = _padded_batch(model, tokenizer, [p for p, _ in held], [c for _, c in held],
                         [1.0] * len(held))
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(False)
        with torch.no_grad():
            train_in = _block_inputs(model, layers, train)
            test_in = _block_inputs(model, layers, test)
            full = _batch_loss(model, layers, test, 0, None)
            base_loss = float(full)
            mid = layers.num_blocks // 2
            cached = _batch_loss(model, layers, test, mid, test_in[mid])
            use_cache = share_prefix and bool(torch.allclose(cached, full, rtol=1e-4, atol=1e-5))
        if info is not None:
            info["prefix_cache"] = use_cache
        out = []
        for k in range(layers.num_blocks):
            block = list(layers.blocks[k].parameters())
            saved = [p.detach().clone() for p in block]
            try:
                for p in block:
                    p.requires_grad_(True)
                decay = [p for p in block if p.dim() >= 2]
                rest = [p for p in block if p.dim() < 2]
                opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                                         {"params": rest, "weight_decay": 0.0}], lr=lr)
                for _ in range(steps):
                    loss = _batch_loss(model, layers, train, k if use_cache else 0,
                                       train_in[k] if use_cache else None)
                    if not loss.requires_grad:
                        break  # every weight is 0 (no reward signal): nothing to learn
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                with torch.no_grad():
                    after = float(_batch_loss(model, layers, test, k if use_cache else 0,
                                              test_in[k] if use_cache else None))
                out.append(base_loss - after)
            finally:
                with torch.no_grad():
                    for p, s in zip(block, saved):
                        p.copy_(s)
                        p.grad = None
                        p.requires_grad_(False)
    finally:
        for p, f in zip(params, flags):
            p.requires_grad_(f)
    if seconds is not None:
        seconds["probe"] = time.perf_counter() - start
    return out


def _padded_batch(model, tokenizer, prompts: list[str], completions: list[str],
                  weights: list[float]) -> dict:
    """Right-padded ids, attention mask, and per-token loss weights: w_i / (completion tokens of
    i) on example i's completion tokens (the targets), 0 elsewhere; examples with w_i = 0 or an
    empty completion are left out."""
    device = next(model.parameters()).device
    rows = []
    for prompt, completion, w in zip(prompts, completions, weights):
        if w == 0 or not completion:
            continue
        p_ids = tokenizer(prompt)["input_ids"]
        c_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
        if c_ids:
            rows.append((list(p_ids) + list(c_ids), len(p_ids), w))
    width = max((len(ids) for ids, _, _ in rows), default=1)
    ids = torch.full((max(len(rows), 1), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    target_w = torch.zeros(ids.shape, dtype=torch.float32)
    for i, (seq, n_prompt, w) in enumerate(rows):
        ids[i, :len(seq)] = torch.tensor(seq)
        mask[i, :len(seq)] = 1
        target_w[i, n_prompt:len(seq)] = w / (len(seq) - n_prompt)
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device),
            "target_weight": target_w.to(device), "empty": not rows}


def _block_inputs(model, layers, batch: dict) -> list[torch.Tensor]:
    """The hidden state entering each block on `batch` (one forward pass, recorded by hooks)."""
    seen: list[torch.Tensor | None] = [None] * layers.num_blocks

    def hook(k):
        def record(module, args, kwargs):
            h = args[0] if args else kwargs["hidden_states"]
            seen[k] = h.detach()
        return record

    handles = [b.register_forward_pre_hook(hook(k), with_kwargs=True)
               for k, b in enumerate(layers.blocks)]
    try:
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return seen


def _batch_loss(model, layers, batch: dict, k: int, hidden: torch.Tensor | None) -> torch.Tensor:
    """sum_i w_i * mean-token NLL of completion i, from block k's input `hidden` (blocks k..L-1
    only: the block list is cut to them for this one forward) or, with `hidden` None, from the
    ids through the whole model."""
    if batch["empty"]:
        return torch.zeros((), device=batch["input_ids"].device)
    if hidden is None:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       use_cache=False).logits
    else:
        parent_path, _, attr = layers.blocks_path.rpartition(".")
        parent = model.get_submodule(parent_path) if parent_path else model
        original = getattr(parent, attr)
        setattr(parent, attr, torch.nn.ModuleList(list(original)[k:]))
        try:
            logits = model(inputs_embeds=hidden, attention_mask=batch["attention_mask"],
                           use_cache=False).logits
        finally:
            setattr(parent, attr, original)
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    token = logp.gather(-1, batch["input_ids"][:, 1:].unsqueeze(-1)).squeeze(-1)
    return -(token * batch["target_weight"][:, 1:]).sum()


def _held_out_pairs(task: Task, n_prompts: int, seed: int, seen: set[str],
                    why: str) -> list[tuple[str, str]]:
    """Up to `n_prompts` reference (prompt, answer) pairs on other prompts than `seen`: the next
    seed's draw, without the prompts already used."""
    held = [(p, c) for p, c in sft_examples(task, "train", 2 * n_prompts, seed + 1)
            if p not in seen][:n_prompts]
    if not held:
        raise ValueError(f"task {task.name!r} has no training prompts beyond the {len(seen)} "
                         f"{why} needs held-out ones")
    return held


def _objective_batch(model, tokenizer, task: Task, method: str, n_prompts: int,
                     num_generations: int, max_new_tokens: int | None, temperature: float,
                     seed: int) -> tuple[list[str], list[str], list[float]]:
    """(prompts, completions, weights) of the method's objective on `n_prompts` training items
    drawn with `seed`: for RL methods the model's own samples weighted by their group-normalised
    rewards, for SFT the task's reference answers with weight 1."""
    if get_method(method).is_rl:
        items = task.items("train", n_prompts, seed)
        prompts = [it.prompt for it in items for _ in range(num_generations)]
        completions = generate_texts(model, tokenizer, prompts, max_new_tokens or task.max_new_tokens,
                                     do_sample=True, temperature=temperature)
        rewards = torch.tensor([task.score(c, items[i // num_generations])
                                for i, c in enumerate(completions)]).view(-1, num_generations)
        adv = (rewards - rewards.mean(1, keepdim=True)) / (rewards.std(1, keepdim=True) + 1e-4)
        return prompts, completions, adv.flatten().tolist()
    pairs = sft_examples(task, "train", n_prompts, seed)
    return [p for p, _ in pairs], [c for _, c in pairs], [1.0] * len(pairs)


def _block_gradients(model, tokenizer, layers, prompts: list[str], completions: list[str],
                     weights: list[float]) -> list[list[torch.Tensor]]:
    """Per block, the float32 gradients of its parameters (in `parameters()` order; zeros where
    the loss does not reach them) of the weighted completion NLL. Every parameter takes part in
    the backward pass; the model's requires_grad flags are restored afterwards."""
    params = [p for p in model.parameters()]
    flags = [p.requires_grad for p in params]
    model.zero_grad(set_to_none=True)
    for p in params:
        p.requires_grad_(True)
    try:
        loss = _completion_logprob_loss(model, tokenizer, prompts, completions, weights)
        if loss.requires_grad:
            loss.backward()
        return [[p.grad.float().clone() if p.grad is not None else torch.zeros_like(p, dtype=torch.float32)
                 for p in layers.blocks[k].parameters()] for k in range(layers.num_blocks)]
    finally:
        model.zero_grad(set_to_none=True)
        for p, f in zip(params, flags):
            p.requires_grad_(f)


def agreement(estimates: dict[str, list[float | None]], measured: dict[int, float],
              seconds: dict[str, float], sweep_seconds: float,
              run_seconds: float | None = None) -> list[dict]:
    """Per estimator: Spearman with the measured C(k); top-1 regret, the measured C of the best
    block minus that of the block the estimator ranks first (0: it found the best block); and its
    cost against the sweep's and, with `run_seconds` (a single-block run's mean), in runs."""
    blocks = sorted(measured)
    best = max(measured[b] for b in blocks) if blocks else math.nan
    rows = []
    for name, values in estimates.items():
        est = [values[b] if b < len(values) else None for b in blocks]
        rho, n = spearman(est, [measured[b] for b in blocks])
        ranked = [(v, b) for v, b in zip(est, blocks) if v is not None and math.isfinite(v)]
        regret = best - measured[max(ranked)[1]] if ranked else math.nan
        cost = seconds.get(name, seconds.get(name.split(":")[0]))
        rows.append({"estimator": name, "spearman": rho, "blocks": n, "top1_regret": regret,
                     "seconds": cost,
                     "cost_vs_sweep": (cost / sweep_seconds) if cost is not None and sweep_seconds else None,
                     "cost_in_runs": (cost / run_seconds) if cost is not None and run_seconds else None})
    return rows


class Timer:
    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0
