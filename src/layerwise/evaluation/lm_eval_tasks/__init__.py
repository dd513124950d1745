"""lm-eval tasks that run offline, shipped with layerwise and always on the harness's include path.

- `layerwise_arith_mc` (multiple_choice, `arith_mc.jsonl`): 40 arithmetic facts ("What is 7 + 7?")
  with four numeric choices; `acc` / `acc_norm`, chance 0.25.
- `layerwise_arith_gen` (generate_until, `arith_gen.jsonl`): 40 other arithmetic questions,
  greedy decoding to the end of the line; `exact_match` of the first number in the answer.
- `layerwise_wikitext_local` (loglikelihood_rolling): lm-eval's `wikitext` forgetting measure
  (word_perplexity, byte_perplexity, bits_per_byte) over a raw WikiText file, one document per
  article; see `layerwise.evaluation.harness.wikitext_task` to point it at any file.

The YAML files are lm-eval task configs; `loaders.py` builds their datasets in memory. This
package holds no code of its own: lm-eval imports `loaders.py` by path from the YAML.
"""
