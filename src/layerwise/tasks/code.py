"""`code`: write a small Python function that passes hidden unit tests; reward = fraction passed.

Nothing is downloaded: an offline bank of function-writing problems is generated from templates
(sum of multiples of k, reverse a string, fizzbuzz with other divisors and words, the n-th term of
a Fibonacci-like sequence with given starts, ...), each with varied constants, function names and
argument names: several hundred distinct items. An item's prompt is the function's signature and
docstring (with one worked example); its SFT target is a reference body; its hidden tests (inputs
and expected outputs) are kept in `item.meta`, so a dataset row alone is enough to score it.

Splits: an item's split is a stable hash of its template and constants, not of its names, so a
problem renamed (`count_vowels(text)` vs `vowel_count(s)`) never sits on both sides.

Scoring runs model output, which is untrusted, and only ever through `sandbox.run_untrusted`:
the extracted code is wrapped in a harness that calls the function on every test input separately
(one raising test does not stop the others) and reports what it returned. Two things keep the
model from faking a pass:
- the expected outputs never enter the sandbox; the child only reports returned values (as JSON)
  and this process compares them, so a forged report would have to contain the right answers;
- reports carry a random per-run nonce read from stdin, so the program's own prints are not
  mistaken for reports, and a test reported twice voids the run.
A run that times out, crashes before reporting all tests, or prints garbage scores 0.
"""

from __future__ import annotations

import functools
import hashlib
import json
import random
import re
import secrets
import textwrap
from dataclasses import dataclass, field
from typing import Any, Callable

from layerwise.errors import LayerwiseError
from layerwise.tasks.base import TaskItem, check_split
from layerwise.tasks.sandbox import check_jail, run_untrusted

EVAL_SHARE = 5  # one problem (template + constants) in five belongs to the eval split
OUTPUT_CAP = 1 << 20  # bytes of the program's stdout read back: reports plus the model's prints
PROMPT_LINE = "# Complete this Python function. Hidden unit tests will call it.\n"

# --- the problem bank -------------------------------------------------------------------------


@dataclass(frozen=True)
class Template:
    """A family of problems. `doc` and `body` are format strings over the argument names
    (p0, p1, ...) and the constants; `solve(c, *args)` computes what the body returns."""

    key: str
    names: tuple[str, ...]  # function names (may use the constants)
    params: tuple[tuple[str, ...], ...]  # argument-name variants
    doc: str
    body: str
    solve: Callable[..., Any]
    draw: Callable[[random.Random, dict], list]  # one random test input (an argument list)
    edges: Callable[[dict], list[list]] = lambda c: []  # inputs always tested (both branches...)
    constants: tuple[dict, ...] = ({},)


WORDS = ("apple", "level", "tree", "sun", "banana", "stats", "moon", "racecar", "data", "noon",
         "python", "kayak", "sea", "tot", "orange", "test", "an", "a", "byte", "civic")


def _ints(rng, low=-20, high=50, least=0, most=8):
    return [rng.randint(low, high) for _ in range(rng.randint(least, most))]


def _sentence(rng, most=5):
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(0, most)))


def _mixed_case(rng, text):
    return "".join(ch.upper() if rng.random() < 0.3 else ch for ch in text)


def _word(rng):
    """A palindrome half the time, so both answers of a palindrome check get tested."""
    if rng.random() < 0.5:
        half = "".join(rng.choice("abcde") for _ in range(rng.randint(0, 3)))
        return half + rng.choice(["", "x"]) + half[::-1]
    return rng.choice(WORDS)


def _caesar(text, k):
    return "".join(chr((ord(ch) - 97 + k) % 26 + 97) if "a" <= ch <= "z" else ch for ch in text)


def _product(low, n):
    result = 1
    for i in range(low, n + 1):
        result *= i
    return result


def _fib(a, b, n):
    for _ in range(n):
        a, b = b, a + b
    return a


def _gcd(a, b):
    while b:
        a, b = b, a % b
    return a


def _digit_sum(n, base):
    total = 0
    while n > 0:
        total, n = total + n % base, n // base
    return total


def _is_prime(n):
    return n >= 2 and all(n % d for d in range(2, int(n ** 0.5) + 1))


def _collatz(n):
    steps = 0
    while n != 1:
        n, steps = (n // 2 if n % 2 == 0 else 3 * n + 1), steps + 1
    return steps


def _unique(xs):
    return list(dict.fromkeys(xs))


def _running(xs):
    out, total = [], 0
    for x in xs:
        total += x
        out.append(total)
    return out


def _fizz(c, n):
    a, b = c["a"], c["b"]
    if n % a == 0 and n % b == 0:
        return c["w1"] + c["w2"]
    return c["w1"] if n % a == 0 else c["w2"] if n % b == 0 else str(n)


LISTS = (("numbers",), ("values",), ("xs",))
TEXTS = (("text",), ("s",), ("word",))
NUMBERS = (("n",), ("number",))
LOOP = """\
    result = 1
    for i in range({k}, {p0} + 1):
        result *= i
    return result
"""

TEMPLATES: tuple[Template, ...] = (
    Template("sum_multiples", ("sum_multiples_of_{k}", "sum_divisible_by_{k}"), LISTS,
             "Return the sum of the integers in `{p0}` that are divisible by {k}.",
             "    return sum(x for x in {p0} if x % {k} == 0)\n",
             lambda c, xs: sum(x for x in xs if x % c["k"] == 0), lambda r, c: [_ints(r)],
             lambda c: [[[]], [[c["k"], 1, 2 * c["k"]]]], tuple({"k": k} for k in range(2, 8))),
    Template("count_above", ("count_above", "count_larger"), LISTS,
             "Return how many integers in `{p0}` are greater than {k}.",
             "    return sum(1 for x in {p0} if x > {k})\n",
             lambda c, xs: sum(1 for x in xs if x > c["k"]), lambda r, c: [_ints(r)],
             lambda c: [[[]], [[c["k"], c["k"] + 1]]], tuple({"k": k} for k in (-5, 0, 3, 10, 25))),
    Template("scale", ("scale_by_{k}", "multiply_all_by_{k}"), LISTS,
             "Return a new list with every integer of `{p0}` multiplied by {k}, in the same order.",
             "    return [x * {k} for x in {p0}]\n",
             lambda c, xs: [x * c["k"] for x in xs], lambda r, c: [_ints(r)],
             lambda c: [[[]]], tuple({"k": k} for k in range(2, 7))),
    Template("shift", ("add_to_each", "shift_values"), LISTS,
             "Return a new list with {k} added to every integer of `{p0}`, in the same order.",
             "    return [x + {k} for x in {p0}]\n",
             lambda c, xs: [x + c["k"] for x in xs], lambda r, c: [_ints(r)],
             lambda c: [[[]]], tuple({"k": k} for k in (1, 3, 5, 7, 10))),
    Template("reverse", ("reverse_string", "reversed_text", "backwards"), TEXTS,
             "Return `{p0}` with its characters in reverse order.", "    return {p0}[::-1]\n",
             lambda c, s: s[::-1], lambda r, c: [_sentence(r, 3)], lambda c: [[""], ["ab"]]),
    Template("count_letter", ("count_letter_{k}", "occurrences_of_{k}"), TEXTS,
             "Return how many times the lowercase letter '{k}' occurs in `{p0}`.",
             "    return {p0}.count('{k}')\n",
             lambda c, s: s.count(c["k"]), lambda r, c: [_mixed_case(r, _sentence(r))],
             lambda c: [[""], [c["k"].upper() + c["k"]]], tuple({"k": k} for k in "aeostn")),
    Template("count_vowels", ("count_vowels", "vowel_count", "number_of_vowels"), TEXTS,
             "Return how many characters of `{p0}` are vowels ({v}), in upper or lower case.",
             "    return sum(1 for ch in {p0}.lower() if ch in '{letters}')\n",
             lambda c, s: sum(1 for ch in s.lower() if ch in c["letters"]),
             lambda r, c: [_mixed_case(r, _sentence(r))], lambda c: [[""], ["Yay AEIOU"]],
             ({"letters": "aeiou", "v": "a, e, i, o, u"},
              {"letters": "aeiouy", "v": "a, e, i, o, u, y"})),
    Template("fizzbuzz", ("fizzbuzz", "word_for_number", "say"), (("n",), ("number",)),
             "Return '{w1}{w2}' if `{p0}` is divisible by both {a} and {b}, '{w1}' if only by {a}, "
             "'{w2}' if only by {b}, and otherwise `{p0}` as a string.",
             "    if {p0} % {a} == 0 and {p0} % {b} == 0:\n        return '{w1}{w2}'\n"
             "    if {p0} % {a} == 0:\n        return '{w1}'\n"
             "    if {p0} % {b} == 0:\n        return '{w2}'\n    return str({p0})\n",
             _fizz, lambda r, c: [r.randint(1, 100)],
             lambda c: [[c["a"] * c["b"]], [c["a"]], [c["b"]], [1]],
             tuple({"a": a, "b": b, "w1": w1, "w2": w2} for a, b, w1, w2 in (
                 (3, 5, "Fizz", "Buzz"), (2, 7, "Foo", "Bar"), (3, 4, "Ping", "Pong"),
                 (5, 7, "Fizz", "Buzz"), (2, 3, "Tik", "Tok"), (4, 9, "Zig", "Zag")))),
    Template("extreme", ("find_{which}", "{which}_of"), LISTS,
             "Return the {which} integer in the non-empty list `{p0}`.",
             "    return {fn}({p0})\n",
             lambda c, xs: max(xs) if c["fn"] == "max" else min(xs),
             lambda r, c: [_ints(r, least=1)], lambda c: [[[7]], [[9, 1, 5]], [[1, 5, 9]]],
             ({"which": "largest", "fn": "max"}, {"which": "smallest", "fn": "min"})),
    Template("palindrome", ("is_palindrome", "reads_same_backwards", "palindrome_check"), TEXTS,
             "Return True if `{p0}` reads the same forwards and backwards ({how}), else False.",
             "    return {p0}{low} == {p0}{low}[::-1]\n",
             lambda c, s: (s.lower() if c["low"] else s) == (s.lower() if c["low"] else s)[::-1],
             lambda r, c: [_mixed_case(r, _word(r))],
             lambda c: [["Level"], ["abba"], ["abc"], [""]],
             ({"how": "upper and lower case count as different", "low": ""},
              {"how": "ignoring upper/lower case", "low": ".lower()"})),
    Template("range_product", ("product_from_{k}", "range_product"), (("n",), ("m",), ("limit",)),
             "Return the product of all integers from {k} to `{p0}` inclusive "
             "(1 when `{p0}` < {k}).",
             LOOP, lambda c, n: _product(c["k"], n), lambda r, c: [r.randint(0, 12)],
             lambda c: [[0], [c["k"] - 1], [c["k"]]], tuple({"k": k} for k in (1, 2, 3))),
    Template("factorial", ("factorial", "fact"), (("n",), ("k",)),
             "Return the factorial of the non-negative integer `{p0}` (the factorial of 0 is 1).",
             LOOP.replace("{k}", "1"), lambda c, n: _product(1, n), lambda r, c: [r.randint(0, 12)],
             lambda c: [[0], [1]]),
    Template("fib_like", ("fib_like", "sequence_term", "nth_term"), (("n",), ("index",)),
             "A sequence starts {a}, {b}, and each later term is the sum of the two before it. "
             "Return the term at position `{p0}` (position 0 is {a}).",
             "    a, b = {a}, {b}\n    for _ in range({p0}):\n        a, b = b, a + b\n"
             "    return a\n",
             lambda c, n: _fib(c["a"], c["b"], n), lambda r, c: [r.randint(0, 20)],
             lambda c: [[0], [1], [2]],
             tuple({"a": a, "b": b} for a, b in ((0, 1), (1, 1), (2, 1), (1, 3), (3, 2), (2, 5)))),
    Template("gcd", ("gcd", "greatest_common_divisor"), (("a", "b"), ("x", "y"), ("m", "n")),
             "Return the greatest common divisor of the positive integers `{p0}` and `{p1}`.",
             "    while {p1}:\n        {p0}, {p1} = {p1}, {p0} % {p1}\n    return {p0}\n",
             lambda c, a, b: _gcd(a, b), lambda r, c: [r.randint(1, 200), r.randint(1, 200)],
             lambda c: [[12, 18], [7, 7], [1, 9]]),
    Template("lcm", ("lcm", "least_common_multiple"), (("a", "b"), ("x", "y"), ("m", "n")),
             "Return the least common multiple of the positive integers `{p0}` and `{p1}`.",
             "    g, h = {p0}, {p1}\n    while h:\n        g, h = h, g % h\n"
             "    return {p0} * {p1} // g\n",
             lambda c, a, b: a * b // _gcd(a, b), lambda r, c: [r.randint(1, 30), r.randint(1, 30)],
             lambda c: [[4, 6], [5, 5], [1, 9]]),
    Template("digit_sum", ("digit_sum_base_{k}", "sum_of_digits_in_base_{k}"),
             (("n",), ("number",), ("value",)),
             "Return the sum of the digits of the non-negative integer `{p0}` written in base {k}.",
             "    total = 0\n    while {p0} > 0:\n        total += {p0} % {k}\n"
             "        {p0} //= {k}\n    return total\n",
             lambda c, n: _digit_sum(n, c["k"]), lambda r, c: [r.randint(0, 5000)],
             lambda c: [[0], [c["k"]], [c["k"] - 1]], tuple({"k": k} for k in (10, 2, 8, 16, 3))),
    Template("is_prime", ("is_prime", "prime_check", "is_a_prime"), NUMBERS,
             "Return True if `{p0}` is a prime number, else False (numbers below 2 are not prime).",
             "    if {p0} < 2:\n        return False\n    d = 2\n    while d * d <= {p0}:\n"
             "        if {p0} % d == 0:\n            return False\n        d += 1\n"
             "    return True\n",
             lambda c, n: _is_prime(n), lambda r, c: [r.randint(-3, 120)],
             lambda c: [[0], [1], [2], [91], [97]]),
    Template("clamp", ("clamp", "limit_value"), (("x",), ("value",), ("n",)),
             "Return `{p0}` limited to the range {lo}..{hi}: {lo} if it is smaller, {hi} if it is "
             "larger, else `{p0}` itself.",
             "    return max({lo}, min({hi}, {p0}))\n",
             lambda c, x: max(c["lo"], min(c["hi"], x)),
             lambda r, c: [r.randint(c["lo"] - 20, c["hi"] + 20)],
             lambda c: [[c["lo"] - 1], [c["hi"] + 1], [c["lo"]], [(c["lo"] + c["hi"]) // 2]],
             tuple({"lo": lo, "hi": hi}
                   for lo, hi in ((0, 10), (1, 100), (-5, 5), (18, 65), (0, 255)))),
    Template("parity", ("keep_{parity}", "only_{parity}", "{parity}_numbers"), LISTS,
             "Return the {parity} integers of `{p0}`, in their original order.",
             "    return [x for x in {p0} if x % 2 == {r}]\n",
             lambda c, xs: [x for x in xs if x % 2 == c["r"]], lambda r, c: [_ints(r)],
             lambda c: [[[]], [[1, 2, 3, 4]]],
             ({"parity": "even", "r": 0}, {"parity": "odd", "r": 1})),
    Template("caesar", ("shift_letters_by_{k}", "caesar_{k}"), (("text",), ("message",), ("s",)),
             "Return `{p0}` with every lowercase letter moved {k} places forward in the alphabet "
             "(wrapping from z to a); every other character stays as it is.",
             "    out = []\n    for ch in {p0}:\n        if 'a' <= ch <= 'z':\n"
             "            ch = chr((ord(ch) - ord('a') + {k}) % 26 + ord('a'))\n"
             "        out.append(ch)\n    return ''.join(out)\n",
             lambda c, s: _caesar(s, c["k"]), lambda r, c: [_mixed_case(r, _sentence(r)) + "!"],
             lambda c: [[""], ["xyz"]], tuple({"k": k} for k in range(1, 6))),
    Template("count_words", ("count_words", "word_count", "number_of_words"), TEXTS,
             "Return the number of words in `{p0}`; words are separated by whitespace.",
             "    return len({p0}.split())\n",
             lambda c, s: len(s.split()),
             lambda r, c: [_sentence(r).replace(" ", r.choice([" ", "  ", "\t"]))],
             lambda c: [[""], ["  one  "]]),
    Template("repeat_join", ("repeat_joined", "join_copies"),
             (("text", "times"), ("s", "n"), ("word", "count")),
             "Return `{p1}` copies of `{p0}` joined by '{sep}' (an empty string when `{p1}` is 0).",
             "    return '{sep}'.join([{p0}] * {p1})\n",
             lambda c, s, n: c["sep"].join([s] * n),
             lambda r, c: [r.choice(WORDS), r.randint(0, 4)],
             lambda c: [["ab", 0], ["ab", 1], ["ab", 3]],
             tuple({"sep": sep} for sep in ("-", ", ", "", " + ", "|"))),
    Template("running_sum", ("running_sum", "prefix_sums", "cumulative_totals"), LISTS,
             "Return the running totals of `{p0}`: element i is the sum of its first i + 1 "
             "integers.",
             "    totals, total = [], 0\n    for x in {p0}:\n        total += x\n"
             "        totals.append(total)\n    return totals\n",
             lambda c, xs: _running(xs), lambda r, c: [_ints(r)], lambda c: [[[]]]),
    Template("unique", ("unique_in_order", "dedupe", "remove_duplicates"), LISTS,
             "Return the integers of `{p0}` without repeats, each kept at its first position.",
             "    seen, out = set(), []\n    for x in {p0}:\n        if x not in seen:\n"
             "            seen.add(x)\n            out.append(x)\n    return out\n",
             lambda c, xs: _unique(xs), lambda r, c: [_ints(r, 0, 6)],
             lambda c: [[[]], [[2, 1, 2, 1]]]),
    Template("divisors", ("count_divisors", "number_of_divisors"), NUMBERS,
             "Return how many positive integers divide the positive integer `{p0}` exactly.",
             "    return sum(1 for d in range(1, {p0} + 1) if {p0} % d == 0)\n",
             lambda c, n: sum(1 for d in range(1, n + 1) if n % d == 0),
             lambda r, c: [r.randint(1, 100)], lambda c: [[1], [13], [12]]),
    Template("last_items", ("last_{k}", "take_last_{k}"), LISTS,
             "Return a list of the last {k} items of `{p0}` (all of them when it has fewer).",
             "    return {p0}[-{k}:]\n",
             lambda c, xs: xs[-c["k"]:], lambda r, c: [_ints(r, most=7)],
             lambda c: [[[]], [list(range(c["k"] + 2))]], tuple({"k": k} for k in range(1, 5))),
    Template("collatz", ("collatz_steps", "steps_to_one"), (("n",), ("start",)),
             "Starting from the positive integer `{p0}`, repeatedly halve it when it is even and "
             "replace it by 3 times it plus 1 when it is odd. Return how many steps reach 1.",
             "    steps = 0\n    while {p0} != 1:\n"
             "        {p0} = {p0} // 2 if {p0} % 2 == 0 else 3 * {p0} + 1\n"
             "        steps += 1\n    return steps\n",
             lambda c, n: _collatz(n), lambda r, c: [r.randint(1, 60)], lambda c: [[1], [2], [3]]),
    Template("power_sum", ("sum_of_powers_{k}", "power_{k}_total"), LISTS,
             "Return the sum of every integer in `{p0}` raised to the power {k}.",
             "    return sum(x ** {k} for x in {p0})\n",
             lambda c, xs: sum(x ** c["k"] for x in xs), lambda r, c: [_ints(r, -5, 9)],
             lambda c: [[[]], [[-2, 3]]], ({"k": 2}, {"k": 3})),
    Template("capitalize", ("title_words", "capitalize_each"), TEXTS,
             "Return `{p0}` with the first letter of every space-separated word in upper case and "
             "the rest unchanged.",
             "    return ' '.join(w[:1].upper() + w[1:] for w in {p0}.split(' '))\n",
             lambda c, s: " ".join(w[:1].upper() + w[1:] for w in s.split(" ")),
             lambda r, c: [_sentence(r)], lambda c: [[""], ["a bC"]]),
    Template("starts_with", ("count_words_starting_with_{k}", "words_beginning_{k}"), TEXTS,
             "Return how many whitespace-separated words of `{p0}` start with the lowercase "
             "letter '{k}'.",
             "    return sum(1 for w in {p0}.split() if w.startswith('{k}'))\n",
             lambda c, s: sum(1 for w in s.split() if w.startswith(c["k"])),
             lambda r, c: [_sentence(r, 6)], lambda c: [[""], [c["k"] + " " + c["k"].upper()]],
             tuple({"k": k} for k in "abcst")),
)


@dataclass(frozen=True)
class Problem:
    """One problem of the bank: its item and the split it belongs to."""

    item: TaskItem
    split: str


def split_of(core: str) -> str:
    digest = hashlib.blake2b(core.encode(), digest_size=8).digest()
    return "eval" if int.from_bytes(digest, "big") % EVAL_SHARE == 0 else "train"


@functools.lru_cache(maxsize=8)
def problem_bank(n_tests: int) -> tuple[Problem, ...]:
    """Every problem, in a fixed order, each with up to `n_tests` hidden tests."""
    problems = []
    for template in TEMPLATES:
        for constants in template.constants:
            core = f"{template.key}/{json.dumps(constants, sort_keys=True)}"
            for name_pattern in template.names:
                for params in template.params:
                    item = _make_item(template, constants, name_pattern.format(**constants),
                                      params, n_tests)
                    problems.append(Problem(item, split_of(core)))
    return tuple(problems)


def _make_item(template: Template, constants: dict, name: str, params: tuple[str, ...],
               n_tests: int) -> TaskItem:
    fields = {**constants, **{f"p{i}": p for i, p in enumerate(params)}}
    slug = ",".join(f"{key}={value!r}" for key, value in constants.items()) or "-"
    item_id = f"{template.key}/{slug}/{name}({', '.join(params)})"
    rng = random.Random(f"code-tests-{item_id}")
    example = template.draw(rng, constants)
    tests = _tests(template, constants, rng, n_tests, exclude=_key(example))
    doc = textwrap.fill(template.doc.format(**fields), width=92, initial_indent="    \"\"\"",
                        subsequent_indent="    ")
    call = f"{name}({', '.join(repr(a) for a in example)})"
    header = (f"def {name}({', '.join(params)}):\n{doc}\n\n    >>> {call}\n"
              f"    {template.solve(constants, *_copy(example))!r}\n    \"\"\"\n")
    body = template.body.format(**fields)
    return TaskItem(id=item_id, prompt=PROMPT_LINE + header, answer=header + body, target=body,
                    meta={"template": template.key, "entry_point": name, "header": header,
                          "tests": tests})


def _tests(template: Template, constants: dict, rng: random.Random, n_tests: int,
           exclude: str) -> list[list]:
    """[[args, expected], ...]: the template's edge cases first, then distinct random inputs."""
    inputs, seen = [], {exclude}
    candidates = iter(template.edges(constants))
    for _ in range(20 * n_tests):
        if len(inputs) == n_tests:
            break
        args = next(candidates, None) or template.draw(rng, constants)
        if _key(args) not in seen:
            seen.add(_key(args))
            inputs.append(_copy(args))
    return [[args, template.solve(constants, *_copy(args))] for args in inputs]


def _key(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _copy(value: Any) -> Any:
    return json.loads(json.dumps(value))


# --- reading and running a completion ---------------------------------------------------------

FENCE = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\n(.*?)(?:```|\Z)", re.S | re.I)
TOP_LEVEL_CODE = re.compile(r"^(?:def|async def|class|import|from|@)\b", re.M)

HARNESS = '''\
import json, os, sys


def _report(channel, nonce, record):
    os.write(channel, ("\\n" + nonce + " " + record + "\\n").encode())


def _run(source, entry_point, cases):
    nonce = sys.stdin.readline().strip()
    channel = os.dup(1)  # our own stdout: the solution may replace or close sys.stdout
    problem = None
    try:
        namespace = {"__name__": "solution"}
        exec(compile(source, "<solution>", "exec"), namespace)
        function = namespace[entry_point]
    except BaseException as error:  # SystemExit too: the solution does not end the run
        function, problem = None, type(error).__name__
    for index, args in enumerate(cases):
        try:
            if function is None:
                raise RuntimeError(problem)
            record = '{"test": %d, "value": %s}' % (index, json.dumps(function(*args)))
        except BaseException as error:
            record = json.dumps({"test": index, "error": type(error).__name__})
        _report(channel, nonce, record)
    _report(channel, nonce, '{"done": true}')

'''


def extract_code(completion: str, header: str, entry_point: str) -> str | None:
    """The program a completion means: a fenced block, a full `def`, or the body that continues
    the prompt's function (then prefixed with the header)."""
    fenced = FENCE.search(completion)
    text = fenced.group(1) if fenced else completion
    if not text.strip():
        return None
    if re.search(rf"^(?:async\s+)?def\s+{re.escape(entry_point)}\s*\(", text, re.M):
        start = TOP_LEVEL_CODE.search(text)  # drop any prose before the first statement
        return text[start.start():] if start else text
    lines = text.splitlines()
    first = next(line for line in lines if line.strip())
    if not first[:1].isspace():  # an unindented body: indent it under the header
        text = "".join(f"    {line}\n" if line.strip() else "\n" for line in lines)
    return header + text


def harness_program(code: str, entry_point: str, inputs: list[list]) -> str:
    """The trusted test program around the untrusted `code`: call it on every input, report each."""
    return HARNESS + f"_run({code!r}, {entry_point!r}, json.loads({json.dumps(inputs)!r}))\n"


def parse_reports(stdout: str, nonce: str, n_tests: int) -> dict[int, dict] | None:
    """{test index: report} from the nonce-marked lines; None if incomplete or tampered with."""
    reports, done = {}, False
    prefix = nonce + " "
    for line in stdout.splitlines():
        if not line.startswith(prefix):
            continue  # the program's own output
        try:
            record = json.loads(line[len(prefix):])
        except ValueError:
            return None
        if not isinstance(record, dict):
            return None
        if record.get("done") is True:
            done = True
            continue
        index = record.get("test")
        if type(index) is not int or not 0 <= index < n_tests or index in reports:
            return None
        reports[index] = record
    return reports if done else None


# --- the task ---------------------------------------------------------------------------------


@dataclass
class CodeTask:
    n_tests: int = 8
    timeout_s: float = 3.0
    memory_mb: int = 512
    name: str = "code"
    max_new_tokens: int = 128
    unjailed: bool = False  # opt-in: run without a jail where none works (weaker guards only)
    description: str = field(init=False, default="")

    def __post_init__(self):
        if not 1 <= self.n_tests <= 50:
            raise LayerwiseError(f"code n_tests={self.n_tests}: must be 1..50")
        if not 0 < self.timeout_s <= 600:
            raise LayerwiseError(f"code timeout_s={self.timeout_s}: must be in (0, 600] seconds")
        if self.memory_mb < 64:
            raise LayerwiseError(f"code memory_mb={self.memory_mb}: must be 64 or more")
        check_jail(self.unjailed)  # refuse now, before any model is loaded
        self.description = (f"write a Python function that passes {self.n_tests} hidden unit "
                            "tests; score = fraction passed (run in a sandbox)")

    def items(self, split: str, n: int, seed: int) -> list[TaskItem]:
        """`n` items of `split` in a seeded order; train repeats its pool when `n` is larger."""
        check_split(split)
        pool = [p.item for p in problem_bank(self.n_tests) if p.split == split]
        if split == "eval" and n > len(pool):
            raise LayerwiseError(f"code has {len(pool)} eval problems; ask for at most {len(pool)}")
        rng = random.Random(f"code-{split}-{seed}")
        order: list[TaskItem] = []
        while len(order) < n:
            order += rng.sample(pool, len(pool))
        return order[:n]

    def extract(self, completion: str, item: TaskItem) -> str | None:
        return extract_code(completion, item.meta["header"], item.meta["entry_point"])

    def score(self, completion: str, item: TaskItem) -> float:
        """Fraction of the hidden tests passed, run only in the sandbox; 0 when it cannot run."""
        code = self.extract(completion, item)
        tests = item.meta["tests"]
        if code is None or not tests:
            return 0.0
        nonce = secrets.token_hex(16)
        result = run_untrusted(harness_program(code, item.meta["entry_point"],
                                               [args for args, _ in tests]),
                               stdin=nonce + "\n", timeout_s=self.timeout_s,
                               memory_mb=self.memory_mb, max_output_bytes=OUTPUT_CAP,
                               allow_unjailed=self.unjailed)
        reports = None if result.timed_out else parse_reports(result.stdout, nonce, len(tests))
        if reports is None:
            return 0.0
        passed = sum(1 for index, (_, expected) in enumerate(tests)
                     if "value" in reports.get(index, {})
                     and _key(reports[index]["value"]) == _key(expected))
        return passed / len(tests)


def make_task(n_tests: int = 8, timeout_s: float = 3.0, memory_mb: int = 512,
              max_new_tokens: int = 128, unjailed: bool = False) -> CodeTask:
    """Function-writing problems scored by `n_tests` hidden unit tests run in a sandbox.

    The tests run in a bubblewrap jail; where none works, the task refuses unless
    `unjailed=true` (then the weaker layers only: rlimits, namespaces where possible, audit hooks).
    """
    return CodeTask(n_tests=n_tests, timeout_s=timeout_s, memory_mb=memory_mb,
                    max_new_tokens=max_new_tokens, unjailed=unjailed)
