"""The bad-input catalogue of docs/reliability.md: every case runs the real CLI and must end with
its exit code and one line matching its message, never a traceback.

The same list writes the table in the doc, so the doc cannot drift from what the code does:
    .venv/bin/python -m tests.cli.test_reliability --write docs/reliability.md
(it replaces what lies between the `<!-- cases -->` and `<!-- /cases -->` lines).
Faults that need a process (kill -9, NaN loss, a killed run) are tested where they live; the doc
names those tests.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import sys
import tempfile
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import pytest

from layerwise.cli.main import main

VALID = "../shared/data/wikitext2_valid.txt"


@dataclass(frozen=True)
class Case:
    command: str
    what: str  # the bad input, in words
    argv: tuple[str, ...]  # {F}: the fixture directory
    pattern: str  # regex the one line must match
    code: int = 2

    def args(self, fixtures: Path) -> list[str]:
        return [a.replace("{F}", str(fixtures)) for a in self.argv]


T = ("--model", "tiny:llama")
TR = ("train", *T)
CASES = [
    # --- layers / selections
    Case("layers", "a model path that does not exist", ("layers", "--model", "{F}/nowhere"),
         r"model path .*nowhere does not exist"),
    Case("layers", "an unknown tiny family", ("layers", "--model", "tiny:bert"),
         r"unknown tiny family 'bert'"),
    Case("layers", "an empty model directory", ("layers", "--model", "{F}/emptydir"),
         r"model directory .*emptydir has no config\.json"),
    Case("layers", "a model directory whose config.json is not JSON",
         ("layers", "--model", "{F}/badconfig"),
         r"cannot read the config of model directory .*badconfig: .*not a valid JSON file"),
    Case("layers", "a block out of range", ("layers", *T, "--select", "9"),
         r"block 9 .*out of range.*4 blocks"),
    Case("layers", "a malformed selection", ("layers", *T, "--select", "1-x"),
         r"malformed selection item '1-x'"),
    Case("layers", "top:K of a missing file", ("layers", *T, "--select", "top:2@{F}/missing.json"),
         r"missing\.json.*does not exist"),
    Case("layers", "top:K of a binary file", ("layers", *T, "--select", "top:2@{F}/binary.bin"),
         r"result file .*binary\.bin is not UTF-8 text \(a binary file\?\)"),
    Case("layers", "top:K of another model's diagnostics",
         ("layers", *T, "--select", "top:2@{F}/diag6/diagnostics.json"),
         r"was made for a model with 6 blocks; this model has 4: a file from another model"),
    Case("layers", "--output in a directory that cannot exist",
         ("layers", *T, "--select", "1", "--format", "json", "--output", "/proc/nope/x.json"),
         r"--output /proc/nope/x\.json: cannot write into /proc"),
    # --- data
    Case("data", "a missing data file", ("data", *T, "--data", "{F}/missing.txt"), r"does not exist"),
    Case("data", "an empty data file", ("data", *T, "--data", "{F}/empty.txt"), r"is empty"),
    Case("data", "a binary data file", ("data", *T, "--data", "{F}/binary.bin"),
         r"data file .*binary\.bin is not UTF-8 text \(a binary file\?\)"),
    Case("data", "a malformed JSONL line", ("data", *T, "--data", "{F}/bad.jsonl"),
         r"bad\.jsonl.*line 2.*column"),
    Case("data", "a JSONL file without the text field",
         ("data", *T, "--data", "{F}/good.jsonl", "--text-field", "body"),
         r"line 1 has no field 'body'"),
    Case("data", "windows longer than the context", ("data", *T, "--seq-len", "1024"),
         r"over the model's context of 512"),
    Case("data", "a non-positive window count", ("data", *T, "--num-seqs", "0"),
         r"--num-seqs must be at least 1, got 0"),
    # --- diagnose
    Case("diagnose", "an unknown metric", ("diagnose", *T, "--metrics", "nosuch", "--out", "{F}/d1"),
         r"unknown metric 'nosuch'"),
    Case("diagnose", "--out naming an existing file",
         ("diagnose", *T, "--out", "{F}/afile.txt"), r"afile\.txt.*(is a file|not a directory)"),
    Case("diagnose", "--out where nothing can be written",
         ("diagnose", *T, "--out", "/proc/nope"),
         r"--out /proc/nope: cannot write into /proc"),
    Case("diagnose", "more blocks to prune than the model has",
         ("diagnose", *T, "--metrics", "prune", "--prune-blocks", "9", "--out", "{F}/d2"),
         r"--prune-blocks 9 would leave no block: the model has 4"),
    Case("diagnose", "a recovery selection out of range",
         ("diagnose", *T, "--metrics", "recovery", "--recovery-blocks", "7", "--out", "{F}/d3"),
         r"block 7 .*out of range"),
    Case("diagnose", "an empty data file", ("diagnose", *T, "--data", "{F}/empty.txt",
                                              "--out", "{F}/d4"), r"is empty"),
    # --- train: what trains
    Case("train", "no statement of what trains", ("train", *T), r"exactly one of --layers"),
    Case("train", "a layer selection out of range", (*TR, "--layers", "9"),
         r"block 9 .*out of range"),
    Case("train", "--lora-layers without --lora", (*TR, "--full", "--lora-layers", "1"),
         r"--lora-layers configure LoRA adapters: add --lora"),
    Case("train", "a non-positive step count", (*TR, "--full", "--steps", "0"),
         r"--steps 0: must be >= 1"),
    Case("train", "a negative learning rate", (*TR, "--full", "--lr", "-1"),
         r"--lr -1\.0: must be > 0"),
    Case("train", "--out naming an existing file", (*TR, "--full", "--out", "{F}/afile.txt"),
         r"--out .*afile\.txt is a file; expected a directory"),
    # --- train: schedules and tying
    Case("train", "a LISA schedule drawing more blocks than selected",
         (*TR, "--layers", "0-1", "--schedule", "lisa:3@2"), r"G=3 is more than the 2 blocks"),
    Case("train", "a LISA schedule switching every 0 steps",
         (*TR, "--layers", "0-1", "--schedule", "lisa:1@0"),
         r"--schedule 'lisa:1@0': K must be >= 1 \(got 0\)"),
    Case("train", "an unknown schedule", (*TR, "--layers", "0-1", "--schedule", "nosuch"),
         r"unknown --schedule 'nosuch'; valid: fixed, lisa:G@K"),
    Case("train", "importance sampling from a missing file",
         (*TR, "--layers", "0-3", "--schedule", "sample:1@2@{F}/missing.json:block_influence"),
         r"missing\.json.*does not exist"),
    Case("train", "growth phases from another model's diagnostics",
         (*TR, "--layers", "0-3", "--schedule", "growth@{F}/diag6/diagnostics.json:block_influence"),
         r"was made for a model with 6 blocks; this model has 4: a file from another model"),
    Case("train", "an unknown static tying scheme", (*TR, "--full", "--tying", "static:nosuch"),
         r"unknown static scheme 'nosuch'; valid: all, pairs"),
    Case("train", "tying from a missing tying map", (*TR, "--full", "--tying",
                                                     "static:map:{F}/missing"),
         r"tying map .*missing does not exist"),
    Case("train", "--tie-every 0", (*TR, "--full", "--tying", "random", "--tie-every", "0"),
         r"--tie-every 0: must be >= 1"),
    Case("train", "--eval-every 0", (*TR, "--full", "--eval-every", "0"),
         r"--eval-every 0: must be >= 1"),
    # --- train: tasks and files
    Case("train", "an unknown task", (*TR, "--full", "--task", "nosuch"), r"unknown task 'nosuch'"),
    Case("train", "a task file that does not exist",
         (*TR, "--full", "--task", "{F}/missing.py:make_task"), r"missing\.py.*does not exist"),
    Case("train", "a task file whose factory raises", (*TR, "--full", "--task",
                                                       "{F}/raising_task.py:make_task"),
         r"raising_task\.py:make_task.*failed: ValueError: boom"),
    Case("train", "a task option of the wrong type", (*TR, "--full", "--task-option", "digits=abc"),
         r"digits='abc' must be a whole number"),
    Case("train", "an unknown task option", (*TR, "--full", "--task-option", "nosuch=1"),
         r"task 'arithmetic' has no option nosuch; valid: digits"),
    Case("train", "gsm8k with a missing data file",
         (*TR, "--full", "--task", "gsm8k", "--task-option", "train={F}/missing.jsonl"),
         r"missing\.jsonl.*does not exist"),
    Case("train", "a missing --config file", ("train", "--config", "{F}/missing.yaml"),
         r"missing\.yaml.*does not exist"),
    Case("train", "a --config file that is not YAML", ("train", "--config", "{F}/bad.yaml"),
         r"--config .*bad\.yaml is not valid YAML \(line 2\)"),
    Case("train", "a --config file with an unknown key", ("train", "--config", "{F}/unknown.yaml"),
         r"unknown\.yaml: unknown key nosuch_key; valid: batch-size"),
    Case("train", "--resume of a directory that does not exist",
         ("train", "--resume", "{F}/norun"),
         r"--resume .*norun does not exist"),
    Case("train", "--resume of a directory that is not a run",
         ("train", "--resume", "{F}/emptydir"),
         r"--resume .*emptydir: no config\.yaml there \(not a `layerwise train` run"),
    Case("train", "a mask from a missing checkpoint",
         (*TR, "--full", "--mask-from", "{F}/missing"),
         r"--mask-from .*missing': expected BASE,TUNED"),
    Case("train", "a mask from a checkpoint that does not exist",
         (*TR, "--full", "--mask-from", "{F}/missing,{F}/ck_llama"), r"missing.*does not exist"),
    Case("train", "a mask from checkpoints of another model",
         (*TR, "--full", "--mask-from", "{F}/ck_gpt2,{F}/ck_gpt2"),
         r"--mask-from .*ck_gpt2 is a checkpoint of another model: \d+ of the model's tensors "
         r"missing"),
    Case("train", "a mask from a 6-block checkpoint for a 4-block model",
         ("train", "--model", "{F}/ck_llama", "--full", "--mask-from", "{F}/ck_llama6,{F}/ck_llama6"),
         r"ck_llama6 is a checkpoint of another model: .*the model does not have "
         r"\(e\.g\. model\.layers\.4\."),
    Case("train", "DPO pairs from a missing file",
         (*TR, "--full", "--method", "dpo", "--pairs", "{F}/missing.jsonl"),
         r"data file .*missing\.jsonl does not exist"),
    # --- your own data (--dataset; fixtures: tests/data/dataset_fixtures.py)
    Case("train", "a dataset file that does not exist", (*TR, "--layers", "1", "--dataset", "{F}/ds/nowhere.jsonl"),
         r"dataset file .*nowhere.jsonl does not exist"),
    Case("train", "an empty dataset file", (*TR, "--layers", "1", "--dataset", "{F}/ds/empty.jsonl"),
         r"dataset file .*empty.jsonl is empty"),
    Case("train", "a dataset file that is not UTF-8", (*TR, "--layers", "1", "--dataset", "{F}/ds/latin1.jsonl"),
         r"is not UTF-8 \(line 1, byte 13"),
    Case("train", "a dataset file that does not parse", (*TR, "--layers", "1", "--dataset", "{F}/ds/broken.jsonl"),
         r"cannot be parsed as jsonl: ArrowInvalid: JSON parse error.*in row 1"),
    Case("train", "columns that match no TRL dataset type", (*TR, "--layers", "1", "--dataset", "{F}/ds/nomatch.jsonl"),
         r"columns question, answer match no TRL dataset type; each needs: .*prompt-completion: prompt and completion"),
    Case("train", "rows of mixed types", (*TR, "--layers", "1", "--dataset", "{F}/ds/mixed.jsonl"),
         r"rows of mixed types: 3 of 6 rows have no 'completion' \(row 0 has text\)"),
    Case("train", "a message with an unknown role", (*TR, "--layers", "1", "--dataset", "{F}/ds/badrole.jsonl"),
         r"row 4: a message in 'messages' has role 'narrator'"),
    Case("train", "a conversation with no assistant turn", (*TR, "--layers", "1", "--dataset", "{F}/ds/noassistant.jsonl"),
         r"row 2: 'messages' has no assistant turn"),
    Case("train", "a message with empty content", (*TR, "--layers", "1", "--dataset", "{F}/ds/emptycontent.jsonl"),
         r"row 3: message 1 \(assistant\) in 'messages' has empty content"),
    Case("train", "a text column that is not text", (*TR, "--layers", "1", "--dataset", "{F}/ds/notext.jsonl"),
         r"column 'text' holds int64, not text .*never converted to text"),
    Case("train", "every row longer than --max-length", (*TR, "--layers", "1", "--dataset", "{F}/ds/long.jsonl",
                                                          "--max-length", "64"),
         r"every one of the 7 training rows is longer than --max-length 64"),
    Case("train", "too few rows for the eval split", (*TR, "--layers", "1", "--dataset", "{F}/ds/tiny.jsonl"),
         r"--eval-split 5%: the dataset has 1 rows, too few to hold out 1"),
    Case("train", "conversational data, no chat template", (*TR, "--layers", "1", "--dataset", "{F}/ds/messages.jsonl"),
         r"is conversational and the model's tokenizer has no chat template: give one with --chat-template"),
    Case("train", "a chat template file that does not exist", (*TR, "--layers", "1", "--dataset", "{F}/ds/messages.jsonl",
                                                               "--chat-template", "{F}/ds/none.jinja"),
         r"--chat-template .*none.jinja does not exist"),
    Case("train", "a reward that does not import", (*TR, "--layers", "1", "--dataset", "{F}/ds/pc.jsonl",
                                                    "--method", "grpo", "--reward", "{F}/raising_task.py:make_task"),
         r"reward .*raising_task.py:make_task"),
    Case("train", "a reward that raises", (*TR, "--layers", "1", "--dataset", "{F}/ds/pc.jsonl", "--method", "grpo",
                                           "--reward", "{F}/ds/rewards.py:raises"),
         r"reward '.*rewards.py:raises' failed: RuntimeError: reward exploded"),
    Case("train", "a reward of the wrong length", (*TR, "--layers", "1", "--dataset", "{F}/ds/pc.jsonl", "--method",
                                                   "grpo", "--reward", "{F}/ds/rewards.py:short"),
         r"returned 1 rewards for 4 completions"),
    Case("train", "a reward that returns NaN", (*TR, "--layers", "1", "--dataset", "{F}/ds/pc.jsonl", "--method",
                                                "grpo", "--reward", "{F}/ds/rewards.py:nan"),
         r"returned nan for completion 0; rewards must be finite"),
    Case("train", "a reward that returns non-numbers", (*TR, "--layers", "1", "--dataset", "{F}/ds/pc.jsonl",
                                                        "--method", "grpo", "--reward", "{F}/ds/rewards.py:words"),
         r"returned str 'good' for completion 0; rewards must be numbers"),
    Case("train", "an unknown built-in reward", (*TR, "--layers", "1", "--dataset", "{F}/ds/pc.jsonl", "--method",
                                                 "grpo", "--reward", "maths"),
         r"unknown reward 'maths'; valid: math, exact, contains"),
    Case("train", "an RL method with no reward", (*TR, "--layers", "1", "--dataset", "{F}/ds/pc.jsonl", "--method", "grpo"),
         r"--method grpo learns from a reward: add --reward"),
    Case("train", "a method that does not take the data's type", (*TR, "--layers", "1", "--dataset", "{F}/ds/pc.jsonl",
                                                                  "--method", "dpo"),
         r"--method dpo \(DPOTrainer\) takes preference data; .*pc.jsonl is prompt-completion, standard"),
    Case("train", "--reward without --dataset", (*TR, "--layers", "1", "--reward", "math"),
         r"--reward: only with your own data: add --dataset SPEC"),
    Case("train", "--dataset with another --task", (*TR, "--layers", "1", "--dataset", "{F}/ds/pc.jsonl", "--task", "gsm8k"),
         r"--dataset and --task gsm8k: give one of them"),
    Case("train", "a Hub dataset with the Hub unreachable", (*TR, "--layers", "1", "--dataset", "hf:no-such-org/no-such-data"),
         r"dataset hf:no-such-org/no-such-data: "),
    Case("train", "an unknown lm-eval task", (*TR, "--layers", "1", "--forgetting", "lm-eval:layerwise_arith_mcc"),
         r"unknown lm-eval task 'layerwise_arith_mcc'; near names: layerwise_arith_mc"),
    Case("train", "a --report-to whose package is not installed", (*TR, "--layers", "1", "--report-to", "wandb"),
         r"--report-to wandb: the wandb package is not installed \(pip install wandb\)"),
    Case("train", "the lm task's text field holding messages", (*TR, "--layers", "1", "--task", "lm",
                                                                 "--task-option", "train={F}/ds/messages.jsonl",
                                                                 "--task-option", "text_field=messages"),
         r"line 1: field 'messages' holds a list, not text .*never converted to text"),
    Case("train", "an unknown --score-on", (*TR, "--layers", "1", "--score-on", "test"),
         r"--score-on 'test'; valid: eval, validation"),
    Case("sweep", "--score-on validation for a task that builds its own SFT data",
         ("sweep", *T, "--task", "decision", "--layers", "1", "--steps", "2",
          "--score-on", "validation", "--out", "{F}/sv"),
         r"--score-on validation needs a task whose items are its data: task 'decision' builds "
         r"its SFT data itself"),
    Case("eval", "an lm-eval task that does not exist", ("eval", *T, "--lm-eval", "nosuchtask_xyz"),
         r"unknown lm-eval task 'nosuchtask_xyz'"),
    Case("tune", "a dataset a method does not take", ("tune", *T, "--budget", "1", "--dataset", "{F}/ds/lm.jsonl",
                                                      "--method", "grpo", "--reward", "exact", "--out", "{F}/tune-ds"),
         r"--reward scores completions of a prompt; .*lm.jsonl is language-modelling"),
    # --- eval
    Case("eval", "zero items", ("eval", *T, "--n", "0"),
         r"--n 0: evaluate at least one item"),
    Case("eval", "a task option that is not one of the allowed", ("eval", *T, "--task-option",
                                                                  "ops=3"),
         r"ops='3': use one or more of"),
    Case("eval", "--out naming an existing file", ("eval", *T, "--out", "{F}/afile.txt"),
         r"--out .*afile\.txt is a file; expected a directory"),
    # --- sweep
    Case("sweep", "a sweep item out of range", ("sweep", *T, "--layers", "9", "--out", "{F}/s1"),
         r"block 9 .*out of range"),
    Case("sweep", "non-numeric seeds", ("sweep", *T, "--seeds", "a,b", "--out", "{F}/s2"),
         r"--seeds 'a,b': expected comma-separated integers"),
    Case("sweep", "zero workers", ("sweep", *T, "--workers", "0", "--out", "{F}/s3"),
         r"--workers 0: must be >= 1"),
    Case("sweep", "an unreachable Ray cluster", ("sweep", *T, "--backend", "ray",
                                                 "--ray-address", "127.0.0.1:1", "--out",
                                                 "{F}/s4"),
         r"cannot reach the Ray cluster at 127\.0\.0\.1:1"),
    Case("sweep", "--out naming an existing file", ("sweep", *T, "--out", "{F}/afile.txt"),
         r"--out .*afile\.txt is a file; expected a directory"),
    # --- estimate
    Case("estimate", "a sweep directory that does not exist", ("estimate", "{F}/nosweep"),
         r"sweep .*nosweep does not exist"),
    Case("estimate", "a directory that is not a sweep", ("estimate", "{F}/emptydir"),
         r"emptydir holds no contribution\.json \(run `layerwise sweep"),
    Case("estimate", "diagnostics that are a binary file",
         ("estimate", "{F}/sweep4", "--diagnostics", "{F}/binary.bin"),
         r"JSON file .*binary\.bin is not UTF-8 text \(a binary file\?\)"),
    Case("estimate", "diagnostics of a 6-block model against a 4-block sweep",
         ("estimate", "{F}/sweep4", "--diagnostics", "{F}/diag6/diagnostics.json"),
         r"(6 blocks|another model|different model)"),
    Case("estimate", "a sweep whose full run left the score unchanged (every C(k) NaN)",
         ("estimate", "{F}/sweep4", "--no-delta", "--no-gradient"),
         r"no single-block C\(k\) to compare with \(seed 0: full training left the score where"),
    Case("estimate", "--gradient-batches 0", ("estimate", "{F}/sweep4", "--gradient-batches", "0"),
         r"--gradient-prompts 8 and --gradient-batches 0: both must be >= 1"),
    Case("estimate", "--probe-steps -1", ("estimate", "{F}/sweep4", "--probe-steps", "-1"),
         r"--probe-steps -1: must be >= 0 \(0 skips the probe\)"),
    Case("estimate", "a profile of one block", ("estimate", "{F}/sweep4", "--profile-blocks",
                                                "1"),
         r"--profile-blocks 1: 0 skips the profile, else at least 2 \(it interpolates"),
    Case("estimate", "a full run that does not exist", ("estimate", "{F}/sweep4", "--full-run",
                                                        "{F}/norun"),
         r"no full-run checkpoint at .*norun/model \(pass --full-run, or --no-delta\)"),
    Case("sweep", "resuming into a sweep store of another model",
         ("sweep", "--model", "tiny:llama:layers=6", "--task", "arithmetic", "--method", "sft",
          "--layers", "1", "--steps", "2", "--n-train", "8", "--eval-n", "4", "--batch-size", "4",
          "--out", "{F}/sweep4"),
         r"sweep4: since the store's runs were made, the model was 'tiny:llama', now "
         r"'tiny:llama:layers=6'; nothing was written"),
    Case("report", "a sweep to a file --out", ("report", "{F}/sweep4", "--out", "{F}/afile.txt"),
         r"--out .*afile\.txt is a file; expected a directory"),
    # --- tune
    Case("tune", "no budget", ("tune", *T, "--out", "{F}/t1"), r"--budget K\|P% is required"),
    Case("tune", "a step-cost bound outside (0, 1]",
         ("tune", *T, "--budget", "1", "--max-step-cost", "0", "--out", "{F}/tsc"),
         r"--max-step-cost 0: a share of a full backward pass, in \(0, 1\]"),
    Case("tune", "a budget of 0 blocks", ("tune", *T, "--budget", "0", "--out", "{F}/t2"),
         r"--budget 0: train at least one block"),
    Case("tune", "a budget above the model's block count",
         ("tune", *T, "--budget", "9", "--out", "{F}/t3"), r"--budget 9: the model has 4 blocks"),
    Case("tune", "a percentage over 100", ("tune", *T, "--budget", "150%", "--out", "{F}/t4"),
         r"--budget 150%: a percentage must be in \(0, 100\]"),
    Case("tune", "a budget that is not a number", ("tune", *T, "--budget", "two", "--out",
                                                   "{F}/t5"),
         r"--budget 'two': expected a block count K or a percentage P%"),
    Case("tune", "an unknown baseline", ("tune", *T, "--budget", "1", "--baseline", "dense",
                                         "--out", "{F}/t6"),
         r"--baseline 'dense'; valid: mid, full, lora"),
    Case("tune", "an unknown estimator", ("tune", *T, "--budget", "1", "--estimator", "fisher",
                                          "--out", "{F}/t9"),
         r"--estimator 'fisher'; valid: adam-gain, adam-snr, probe, profile"),
    Case("tune", "a profile of one block", ("tune", *T, "--budget", "1", "--estimator",
                                            "profile", "--profile-blocks", "1", "--out",
                                            "{F}/t11"),
         r"--profile-blocks 1: the profile needs at least 2 blocks to interpolate between"),
    Case("tune", "adam-snr from one batch", ("tune", *T, "--budget", "1", "--estimator",
                                             "adam-snr", "--estimate-batches", "1", "--out",
                                             "{F}/t10"),
         r"--estimator adam-snr needs --estimate-batches >= 2 \(got 1\)"),
    Case("tune", "estimates from another model's diagnostics",
         ("tune", *T, "--budget", "1", "--estimates", "{F}/diag6/diagnostics.json", "--out",
          "{F}/t7"), r"was made for a model with 6 blocks; this model has 4"),
    Case("tune", "estimates from a sweep of another task",
         ("tune", *T, "--task", "decision", "--budget", "1", "--estimates",
          "{F}/sweep4/contribution.json", "--out", "{F}/t8"),
         r"is a sweep of task 'arithmetic'; this tune is of 'decision': an estimate from "
         r"another task"),
    Case("tune", "--out naming an existing file", ("tune", *T, "--budget", "1", "--out",
                                                   "{F}/afile.txt"),
         r"--out .*afile\.txt is a file; expected a directory"),
    # --- compare
    Case("compare", "a checkpoint directory that does not exist",
         ("compare", "{F}/ck_llama", "{F}/nowhere"),
         r"checkpoint .*nowhere does not exist \(expected an HF checkpoint directory"),
    Case("compare", "an empty directory", ("compare", "{F}/ck_llama", "{F}/emptydir"),
         r"emptydir holds no \.safetensors weights"),
    Case("compare", "a corrupt safetensors file", ("compare", "{F}/ck_llama", "{F}/corrupt"),
         r"corrupt/model\.safetensors is not a readable safetensors file: header length"),
    Case("compare", "a negative tolerance", ("compare", "{F}/ck_llama", "{F}/ck_llama",
                                             "--tol=-1e-5"),
         r"tolerance -1e-05 is invalid: tolerances must be >= 0"),
    Case("compare", "a non-numeric tolerance", ("compare", "{F}/ck_llama", "{F}/ck_llama",
                                                "--tol", "abc"),
         r"--tol 'abc': expected comma-separated numbers"),
    Case("compare", "a --labels count that does not match",
         ("compare", "{F}/ck_llama", "{F}/ck_llama", "--labels", "a,b,c"),
         r"--labels gives 3 names for 1 tuned checkpoints"),
    Case("compare", "an --expect-layers block out of range",
         ("compare", "{F}/ck_llama", "{F}/ck_llama", "--expect-layers", "99"),
         r"block 99 .*out of range: the model has 4 blocks"),
    Case("compare", "two models that share no tensor",
         ("compare", "{F}/ck_llama", "{F}/ck_gpt2", "--out", "{F}/c1"),
         r"share no tensor name .*checkpoints of different models, nothing to compare"),
    Case("compare", "two identical checkpoints (valid: sparsity 1.0, nothing to rank)",
         ("compare", "{F}/ck_llama", "{F}/ck_llama", "--out", "{F}/c2"),
         r"nothing changed at tol 1e-05 \(sparsity 1\.0\): the checkpoints match", code=0),
    # --- report
    Case("report", "a directory that does not exist", ("report", "{F}/nosweep"),
         r"sweep .*nosweep does not exist"),
    Case("report", "a directory that is not a sweep", ("report", "{F}/emptydir"),
         r"emptydir holds no contribution\.json"),
    Case("report", "--out naming an existing file", ("report", "{F}/emptydir", "--out",
                                                     "{F}/afile.txt"),
         r"--out .*afile\.txt is a file; expected a directory"),
]


def build_fixtures(root: Path) -> Path:
    """The bad (and a few good) inputs the cases name, made with real tiny models."""
    from layerwise.models import load_model

    root.mkdir(parents=True, exist_ok=True)
    (root / "emptydir").mkdir()
    (root / "empty.txt").write_text("")
    (root / "afile.txt").write_text("a file, not a directory\n")
    (root / "binary.bin").write_bytes(bytes(range(256)) * 8)
    (root / "good.jsonl").write_text('{"text": "one"}\n{"text": "two"}\n')
    (root / "bad.jsonl").write_text('{"text": "one"}\n{"text": "two"\n')
    (root / "bad.yaml").write_text("model: [unclosed\n")
    (root / "unknown.yaml").write_text("model: tiny:llama\nfull: true\nnosuch_key: 1\n")
    (root / "raising_task.py").write_text("def make_task():\n    raise ValueError('boom')\n")
    from tests.data.dataset_fixtures import build as build_datasets

    build_datasets(root / "ds")
    (root / "corrupt").mkdir()
    (root / "corrupt" / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (root / "corrupt" / "model.safetensors").write_bytes(b"\xff" * 64)
    load_model("tiny:llama").model.save_pretrained(root / "ck_llama")
    load_model("tiny:gpt2").model.save_pretrained(root / "ck_gpt2")
    load_model("tiny:llama:layers=6").model.save_pretrained(root / "ck_llama6")
    shutil.copytree(root / "ck_llama", root / "badconfig")  # real weights, a broken config
    (root / "badconfig" / "config.json").write_text("{not json")
    with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
        code = main(["diagnose", "--model", "tiny:llama:layers=6", "--data", VALID,
                     "--seq-len", "32", "--num-seqs", "2", "--metrics", "block-influence",
                     "--out", str(root / "diag6"), "-q", "--no-progress"])
    assert code == 0, "the 6-block diagnostics fixture failed"
    with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
        code = main(["sweep", "--model", "tiny:llama", "--task", "arithmetic", "--method", "sft",
                     "--layers", "1", "--steps", "2", "--n-train", "8", "--eval-n", "4",
                     "--batch-size", "4", "--out", str(root / "sweep4"), "-q"])
    assert code == 0, "the 4-block sweep fixture failed"
    return root


def run_case(case: Case, fixtures: Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(case.args(fixtures))
    return code, out.getvalue(), err.getvalue()


def message_of(case: Case, code: int, out: str, err: str) -> str:
    """The line the user reads: the error for a refusal, the telling line for a success."""
    if case.code != 0:
        return err.strip()
    lines = [line for line in (out + err).splitlines() if re.search(case.pattern, line)]
    return lines[0].strip() if lines else ""


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    return build_fixtures(tmp_path_factory.mktemp("reliability"))


def test_the_catalogue_has_at_least_fifty_cases_across_all_commands():
    assert len(CASES) >= 50
    assert {c.command for c in CASES} >= {"layers", "data", "diagnose", "train", "eval", "sweep",
                                          "estimate", "tune", "compare", "report"}
    assert len({(c.command, c.what) for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[f"{c.command}: {c.what}" for c in CASES])
def test_bad_input_is_one_line_with_its_exit_code(case, fixtures):
    code, out, err = run_case(case, fixtures)
    assert "Traceback" not in out + err, err
    assert code == case.code, (code, err)
    if case.code == 2:
        assert out == "" and len(err.strip().splitlines()) == 1, err
        assert err.startswith("layerwise: error: "), err
    assert re.search(case.pattern, message_of(case, code, out, err)), (out, err)


def markdown() -> str:
    """The catalogue as run now: one row per case with its exit code and message."""
    with tempfile.TemporaryDirectory() as tmp:
        root = build_fixtures(Path(tmp) / "f")
        rows = ["| # | command | bad input | exit | message |", "|---|---|---|---|---|"]
        for n, case in enumerate(CASES, 1):
            code, out, err = run_case(case, root)
            message = message_of(case, code, out, err).replace(str(root), "F")
            message = message.replace("|", "\\|")
            argv = " ".join(case.argv).replace("{F}", "F").replace("|", "\\|")
            rows.append(f"| {n} | `{argv}` | {case.what} | {code} | {message} |")
        shutil.rmtree(root, ignore_errors=True)
    return "\n".join(rows) + "\n"


def write_block(doc: Path, name: str, table: str) -> None:
    """Replace what lies between `<!-- name -->` and `<!-- /name -->` in `doc` with `table`."""
    text = doc.read_text()
    start, end = f"<!-- {name} -->\n", f"<!-- /{name} -->"
    if start not in text or end not in text:
        raise SystemExit(f"{doc} has no {start.strip()} ... {end} block to fill")
    head, rest = text.split(start, 1)
    doc.write_text(head + start + table + end + rest.split(end, 1)[1])


def write_or_print(name: str, make_table) -> None:
    """`python -m MODULE --write DOC` fills the doc's block; without arguments, prints it."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if sys.argv[1:2] == ["--write"]:
        write_block(Path(sys.argv[2]), name, make_table())
    else:
        sys.stdout.write(make_table())


if __name__ == "__main__":
    write_or_print("cases", markdown)


def test_every_test_the_doc_names_exists():
    doc = (Path(__file__).parents[2] / "docs" / "reliability.md").read_text()
    named = re.findall(r"`(tests/[\w/]+\.py)(?:::(\w+))?`", doc)
    assert len(named) >= 15
    for path, name in named:
        source = Path(__file__).parents[2] / path
        assert source.is_file(), path
        if name:
            assert re.search(rf"^def {name}\(", source.read_text(), re.M), f"{path}::{name}"
