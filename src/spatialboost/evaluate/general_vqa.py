"""General VQA (Table 1's VQAv2, GQA, MMBench, MME): readers of the released formats and the
official scorers, by rules only (no LLM judge), answered through the same batched generation as
the spatial benchmarks (vqa.ask_batched).

    items = read_vqav2("VQAv2")                       # or read_gqa / read_mmbench / read_mme
    result = run_general_vqa(vlm_batch_answer_fn(vlm, tokenizer), items, batch_size=16)
    result.metrics["accuracy"], result.summary()["accuracy"]     # {"mean", "std"}

Why not lmms-eval: its 0.7 wheel resolves beside requirements.lock, but ships no task YAML (its
TaskManager finds no task, EvolvingLMMs-Lab/lmms-eval#1215), reads lmms-lab's HF copies instead
of the released files, and scores MMBench with a GPT judge. The rules below follow the scripts
named per benchmark; lmms-eval's tasks/{vqav2,gqa,mmbench,mme}/utils.py were read beside them.

Released formats (paths relative to `evaluate.benchmarks.<name>.path`):
    vqav2    v2_OpenEnded_mscoco_val2014_questions.json (questions: image_id, question,
             question_id) + v2_mscoco_val2014_annotations.json (annotations: question_id,
             answer_type, question_type, answers: 10 x {answer, answer_confidence, answer_id});
             images <image_root, default path/val2014>/COCO_val2014_<image_id:012d>.jpg
    gqa      testdev_balanced_questions.json ({question id: {imageId, question, answer,
             types: {structural, semantic, detailed}, ...}}); images <image_root, default
             path/images>/<imageId>.jpg
    mmbench  the TSV (mmbench_dev_20230712.tsv, MMBench_DEV_EN.tsv): index, question, hint, A..D
             (empty or "nan" when absent), answer (a letter), category, image (base64; in
             VLMEvalKit's files a copy's image may be the index of the row holding it). Circular
             copies of question i are rows i + k * 1e6; a file without them gets them generated
    mme      MME_Benchmark_release_version (or its MME_Benchmark/): one folder per subtask, either
             images/ + questions_answers_YN/<stem>.txt (artwork, celebrity, landmark, posters,
             scene) or <stem>.jpg|png beside <stem>.txt; each txt two lines "question<TAB>Yes|No"

Prompts are LLaVA-1.5's (its paper's response-format prompts; model_vqa_mmbench.py): the question
then "Answer the question using a single word or phrase." (VQAv2, GQA, MME); MMBench: hint,
question, "A. ..." lines, then "Answer with the option's letter from the given choices directly."

Scoring (on the raw decoded answer):
    VQAv2    GT-Vision-Lab/VQA vqaEval.py: the answer's punctuation processed and its words
             lower-cased, number words to digits, articles dropped, contractions restored;
             the humans' answers punctuation-processed only when they disagree (as the script);
             accuracy = mean over the 10 leave-one-out subsets of min(1, matches / 3)
    GQA      exact match (GQA's eval.py) after LLaVA's convert_gqa_for_eval: stripped, trailing
             "." removed, lower-cased
    MMBench  the choice by MMBench's rules (a lone letter, "A." "(A)" "A:" ..., else the one
             option whose text the answer contains); CircularEval: a question counts only when
             every circular copy is answered right; an answer no rule reads is wrong
    MME      MME eval_tool/calculation.py: the lower-cased answer is "yes"/"no", else "yes" or
             "no" in its first 4 characters, else "other" (wrong); per subtask acc over
             questions and acc+ over images with both questions right, score = 100 (acc + acc+);
             perception = sum over the 10 perception subtasks (max 2000), cognition over the 4
             cognition ones (max 800)
"""

from __future__ import annotations

import base64
import csv
import json
import re
import sys
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from spatialboost.evaluate.vqa import BatchAnswerFn, ask_batched, bootstrap_summary, decode_item_image

VQAV2, GQA, MMBENCH, MME = "vqav2", "gqa", "mmbench", "mme"
GENERAL_VQA = (VQAV2, GQA, MMBENCH, MME)

SHORT_ANSWER_PROMPT = "Answer the question using a single word or phrase."
MMBENCH_PROMPT = "Answer with the option's letter from the given choices directly."

MME_PERCEPTION = (
    "existence",
    "count",
    "position",
    "color",
    "posters",
    "celebrity",
    "scene",
    "landmark",
    "artwork",
    "OCR",
)
MME_COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")
MME_SPLIT_LAYOUT = ("artwork", "celebrity", "landmark", "posters", "scene")  # images/ + questions_answers_YN/

CIRCULAR_OFFSET = 1_000_000  # MMBench: copy k of question i has index i + k * 1e6

METRICS: dict[str, tuple[str, ...]] = {
    VQAV2: ("accuracy",),
    GQA: ("accuracy",),
    MMBENCH: ("circular_acc",),
    MME: ("perception", "cognition", "perception_acc", "perception_acc_plus", "cognition_acc", "cognition_acc_plus"),
}
"""benchmark -> its keys in metrics/evaluate.json (accuracies in [0, 1]; MME scores in points)."""


@dataclass(frozen=True)
class GeneralVQAItem:
    """One question of a general VQA benchmark; the image is decoded on demand (`image()`)."""

    id: str
    benchmark: str  # VQAV2, GQA, MMBENCH or MME
    question: str  # the prompt the model is asked (with LLaVA-1.5's answer-format line)
    answers: tuple[str, ...]  # VQAv2: the 10 humans'; GQA: (answer,); MMBench: (letter,); MME: ("Yes"|"No",)
    group: str  # scored together: MMBench's circular copies of a question, MME's 2 questions of an image
    category: str  # VQAv2 answer_type, GQA structural type, MMBench category, MME subtask
    options: tuple[tuple[str, str], ...] = ()  # MMBench: (letter, text) in the order shown
    image_path: str | None = None
    image_bytes: bytes | None = field(default=None, repr=False)

    def image(self) -> np.ndarray:
        """(H, W, 3) uint8."""
        return decode_item_image(self.id, self.image_bytes, self.image_path)


# --- VQAv2: the official accuracy -------------------------------------------------------------------

_CONTRACTIONS = dict(
    pair.split(" ")
    for pair in """\
aint ain't|arent aren't|cant can't|couldve could've|couldnt couldn't|couldn'tve couldn't've|couldnt've couldn't've|\
didnt didn't|doesnt doesn't|dont don't|hadnt hadn't|hadnt've hadn't've|hadn'tve hadn't've|hasnt hasn't|\
havent haven't|hed he'd|hed've he'd've|he'dve he'd've|hes he's|howd how'd|howll how'll|hows how's|Id've I'd've|\
I'dve I'd've|Im I'm|Ive I've|isnt isn't|itd it'd|itd've it'd've|it'dve it'd've|itll it'll|let's let's|maam ma'am|\
mightnt mightn't|mightnt've mightn't've|mightn'tve mightn't've|mightve might've|mustnt mustn't|mustve must've|\
neednt needn't|notve not've|oclock o'clock|oughtnt oughtn't|ow's'at 'ow's'at|'ows'at 'ow's'at|'ow'sat 'ow's'at|\
shant shan't|shed've she'd've|she'dve she'd've|she's she's|shouldve should've|shouldnt shouldn't|\
shouldnt've shouldn't've|shouldn'tve shouldn't've|somebody'd somebodyd|somebodyd've somebody'd've|\
somebody'dve somebody'd've|somebodyll somebody'll|somebodys somebody's|someoned someone'd|\
someoned've someone'd've|someone'dve someone'd've|someonell someone'll|someones someone's|somethingd something'd|\
somethingd've something'd've|something'dve something'd've|somethingll something'll|thats that's|thered there'd|\
thered've there'd've|there'dve there'd've|therere there're|theres there's|theyd they'd|theyd've they'd've|\
they'dve they'd've|theyll they'll|theyre they're|theyve they've|twas 'twas|wasnt wasn't|wed've we'd've|\
we'dve we'd've|weve we've|werent weren't|whatll what'll|whatre what're|whats what's|whatve what've|whens when's|\
whered where'd|wheres where's|whereve where've|whod who'd|whod've who'd've|who'dve who'd've|wholl who'll|\
whos who's|whove who've|whyll why'll|whyre why're|whys why's|wont won't|wouldve would've|wouldnt wouldn't|\
wouldnt've wouldn't've|wouldn'tve wouldn't've|yall y'all|yall'll y'all'll|y'allll y'all'll|yall'd've y'all'd've|\
y'alld've y'all'd've|y'all'dve y'all'd've|youd you'd|youd've you'd've|you'dve you'd've|youll you'll|\
youre you're|youve you've""".split("|")
)
"""The evaluation script's table, as published (its capitalised keys never match lower-cased
words, and "somebody'd" maps to "somebodyd": kept, since the script scores that way)."""
_NUMBER_WORDS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
                 "seven": "7", "eight": "8", "nine": "9", "ten": "10"}  # fmt: skip
_ARTICLES = frozenset({"a", "an", "the"})
_PUNCT = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!")
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")  # as published: in effect a "." not followed by a digit
_COMMA_STRIP = re.compile(r"(\d)(,)(\d)")
_PERIOD_STRIP_COUNT = int(re.UNICODE)  # the script passes re.UNICODE (32) as sub()'s count argument


def process_punctuation(text: str) -> str:
    """vqaEval.processPunctuation: a mark next to a space (or any mark, when the text has a
    digit,digit comma) is deleted, any other replaced by a space; "." not before a digit deleted."""
    out = text
    for mark in _PUNCT:
        if f"{mark} " in text or f" {mark}" in text or _COMMA_STRIP.search(text) is not None:
            out = out.replace(mark, "")
        else:
            out = out.replace(mark, " ")
    return _PERIOD_STRIP.sub("", out, count=_PERIOD_STRIP_COUNT)


def process_digit_article(text: str) -> str:
    """vqaEval.processDigitArticle: lower-cased words, number words to digits, articles dropped,
    contractions restored ("dont" -> "don't")."""
    words = [_NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    words = [w for w in words if w not in _ARTICLES]
    return " ".join(_CONTRACTIONS.get(w, w) for w in words)


def normalize_vqa_answer(text: str) -> str:
    """A prediction as vqaEval compares it: newlines and tabs to spaces, stripped, punctuation
    processed, then digits / articles / contractions."""
    return process_digit_article(process_punctuation(text.replace("\n", " ").replace("\t", " ").strip()))


def vqav2_accuracy(prediction: str, human_answers: Sequence[str]) -> float:
    """VQAv2's accuracy of one prediction in [0, 1]: over each leave-one-out subset of the humans'
    answers, min(1, #matches / 3), averaged. 2 of 10 humans -> 0.6, 3 -> 0.9, 4 or more -> 1."""
    if not human_answers:
        raise ValueError("a VQAv2 question without human answers")
    pred = normalize_vqa_answer(prediction)
    answers = list(human_answers)
    if len(set(answers)) > 1:  # only then does the script process the humans' answers (punctuation only)
        answers = [process_punctuation(a) for a in answers]
    matches = sum(a == pred for a in answers)
    per_subset = [min(1.0, (matches - (a == pred)) / 3) for a in answers]
    return float(sum(per_subset) / len(per_subset))


# --- GQA ----------------------------------------------------------------------------------------------


def normalize_gqa_answer(text: str) -> str:
    """LLaVA's convert_gqa_for_eval: stripped, trailing periods removed, lower-cased."""
    return text.strip().rstrip(".").lower()


def gqa_correct(prediction: str, answer: str) -> bool:
    """GQA's eval.py accuracy: exact match of the normalised prediction with the answer."""
    return normalize_gqa_answer(prediction) == answer.strip().lower()


# --- MMBench ------------------------------------------------------------------------------------------

_AFFIXES = (("", "."), ("", ","), ("", ":"), ("", ")"), ("", ")."), ("(", ")"), ("(", ")."), (":", ""), (":", ","),
            (":", "."), (":", ")"), (":", ")."))  # fmt: skip
_MMBENCH_LETTERS = "ABCDE"  # MMBench's evaluator looks for any of these, whatever the options


def mmbench_option_letter(prediction: str) -> str | None:
    """MMBench's can_infer_option: the one letter standing alone among the answer's words ("B",
    "The answer is B"), unless "A" may be the article of a longer answer; else the one letter
    with an affix ("B.", "(B)", "B:", ":B", ...). None when no single letter is found."""
    words = [w.strip() for w in prediction.split()]

    def count(prefix: str = "", suffix: str = "") -> int:
        return sum(f"{prefix}{c}{suffix}" in words for c in _MMBENCH_LETTERS)

    if count() == 1 and not ("A" in words and len(words) > 3):
        return next(c for c in _MMBENCH_LETTERS if c in words)
    for prefix, suffix in _AFFIXES:
        if count(prefix, suffix) == 1:
            return next(c for c in _MMBENCH_LETTERS if f"{prefix}{c}{suffix}" in words)
    return None


def mmbench_option_text(prediction: str, options: Sequence[tuple[str, str]]) -> str | None:
    """MMBench's can_infer_text: the letter of the one option whose text (lower-cased) the
    lower-cased answer contains; None when none or several do."""
    answer = prediction.lower()
    found = [letter for letter, text in options if str(text).lower() in answer]
    return found[0] if len(found) == 1 else None


def mmbench_choice(prediction: str, options: Sequence[tuple[str, str]]) -> str | None:
    """The option an answer picks by MMBench's rules (its letter, then its text), or None."""
    return mmbench_option_letter(prediction) or mmbench_option_text(prediction, options)


# --- MME ----------------------------------------------------------------------------------------------


def mme_yes_no(prediction: str) -> str:
    """MME's parse_pred_ans on the lower-cased answer: "yes" / "no", else "yes" or "no" within its
    first 4 characters ("yes, there is" -> yes, "not really" -> no), else "other"."""
    answer = prediction.strip().lower()
    if answer in ("yes", "no"):
        return answer
    prefix = answer[:4]
    return "yes" if "yes" in prefix else "no" if "no" in prefix else "other"


def mme_subtask_scores(records: Iterable[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """{subtask: {"acc", "acc_plus", "score", "n_images"}} from records with category (the
    subtask), group (the image) and correct; acc over questions, acc+ over images whose
    questions are all right, score = 100 (acc + acc+)."""
    by_image: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        by_image[r["category"]][r["group"]].append(bool(r["correct"]))
    out = {}
    for subtask, images in by_image.items():
        flags = [f for answers in images.values() for f in answers]
        acc, acc_plus = float(np.mean(flags)), float(np.mean([all(a) for a in images.values()]))
        out[subtask] = {
            "acc": acc,
            "acc_plus": acc_plus,
            "score": 100.0 * (acc + acc_plus),
            "n_images": float(len(images)),
        }
    return out


def mme_totals(subtasks: dict[str, dict[str, float]]) -> dict[str, float]:
    """perception / cognition: sums of their subtasks' scores; *_acc and *_acc_plus: means over
    their subtasks (so that perception = 100 x 10 x (acc + acc+) when all 10 are present)."""
    out = {}
    for name, members in (("perception", MME_PERCEPTION), ("cognition", MME_COGNITION)):
        present = [subtasks[s] for s in members if s in subtasks]
        out[name] = float(sum(s["score"] for s in present)) if present else float("nan")
        out[f"{name}_acc"] = float(np.mean([s["acc"] for s in present])) if present else float("nan")
        out[f"{name}_acc_plus"] = float(np.mean([s["acc_plus"] for s in present])) if present else float("nan")
    return out


# --- scoring a run ------------------------------------------------------------------------------------


def score_prediction(item: GeneralVQAItem, prediction: str) -> tuple[float, str | None]:
    """(score in [0, 1], what the rules read from the prediction: its normalised form, the chosen
    letter or the yes/no label; None when nothing could be read)."""
    if item.benchmark == VQAV2:
        return vqav2_accuracy(prediction, item.answers), normalize_vqa_answer(prediction)
    if item.benchmark == GQA:
        return float(gqa_correct(prediction, item.answers[0])), normalize_gqa_answer(prediction)
    if item.benchmark == MMBENCH:
        choice = mmbench_choice(prediction, item.options)
        return float(choice == item.answers[0]), choice
    if item.benchmark == MME:
        label = mme_yes_no(prediction)
        return float(label == item.answers[0].strip().lower()), None if label == "other" else label
    raise ValueError(f"{item.id}: unknown general VQA benchmark {item.benchmark!r}")


@dataclass(frozen=True)
class GeneralVQAResult:
    """One benchmark's metrics (its METRICS keys plus per-category detail) and one record per item."""

    benchmark: str
    metrics: dict[str, float]
    records: tuple[dict[str, Any], ...]

    def summary(self, n_boot: int = 1000, seed: int = 0) -> dict[str, dict[str, float]]:
        """{metric: {"mean", "std"}} for METRICS[benchmark]; std = bootstrap over the scored
        units (questions; MMBench: circular questions; MME: images, resampled within subtasks)."""
        if self.benchmark in (VQAV2, GQA):
            return {"accuracy": bootstrap_summary([r["score"] for r in self.records], n_boot, seed)}
        if self.benchmark == MMBENCH:
            return {"circular_acc": bootstrap_summary(list(circular_hits(self.records).values()), n_boot, seed)}
        return _mme_bootstrap(self.records, n_boot, seed)


def circular_hits(records: Iterable[dict[str, Any]]) -> dict[str, float]:
    """{group: 1.0 when every circular copy of the question is right, else 0.0}."""
    hits: dict[str, bool] = {}
    for r in records:
        hits[r["group"]] = hits.get(r["group"], True) and bool(r["correct"])
    return {g: float(h) for g, h in hits.items()}


def _mme_bootstrap(records: Sequence[dict[str, Any]], n_boot: int, seed: int) -> dict[str, dict[str, float]]:
    """MME's totals with a bootstrap std: images resampled with replacement within each subtask."""
    point = mme_totals(mme_subtask_scores(records))
    per_image: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        per_image[r["category"]][r["group"]].append(bool(r["correct"]))
    rng = np.random.default_rng(seed)
    draws: dict[str, dict[str, np.ndarray]] = {}  # subtask -> (n_boot,) acc and acc+
    for subtask, images in per_image.items():
        right = np.array([sum(a) for a in images.values()], np.float64)  # (n_images,)
        asked = np.array([len(a) for a in images.values()], np.float64)
        idx = rng.integers(0, len(right), size=(n_boot, len(right)))
        draws[subtask] = {"acc": right[idx].sum(1) / asked[idx].sum(1), "acc_plus": (right == asked)[idx].mean(1)}
    out = {}
    for name, members in (("perception", MME_PERCEPTION), ("cognition", MME_COGNITION)):
        present = [draws[s] for s in members if s in draws]
        samples = {
            name: sum(100.0 * (d["acc"] + d["acc_plus"]) for d in present),
            f"{name}_acc": np.mean([d["acc"] for d in present], axis=0),
            f"{name}_acc_plus": np.mean([d["acc_plus"] for d in present], axis=0),
        } if present else {}  # fmt: skip
        for key in (name, f"{name}_acc", f"{name}_acc_plus"):
            std = float(np.std(samples[key], ddof=1)) if key in samples and n_boot > 1 else float("nan")
            out[key] = {"mean": point[key], "std": std}
    return {key: out[key] for key in METRICS[MME]}


def general_vqa_metrics(benchmark: str, records: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Point metrics: METRICS[benchmark] plus per-category ones ("accuracy/yes/no",
    "circular_acc/<category>", "score/<subtask>", ...) and counts."""
    out: dict[str, float] = {
        "n_items": float(len(records)),
        "unparsed": float(sum(r["parsed"] is None for r in records)),
    }
    by_category: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        by_category[r["category"]].append(r)
    if benchmark in (VQAV2, GQA):
        out["accuracy"] = float(np.mean([r["score"] for r in records]))
        out.update({f"accuracy/{c}": float(np.mean([r["score"] for r in rs])) for c, rs in sorted(by_category.items())})
    elif benchmark == MMBENCH:
        hits = circular_hits(records)
        out["circular_acc"] = float(np.mean(list(hits.values())))
        out["n_questions"] = float(len(hits))
        first = {r["group"]: r for r in reversed(records)}  # the question as first listed (the original options)
        out["vanilla_acc"] = float(np.mean([r["correct"] for r in first.values()]))
        for category, rs in sorted(by_category.items()):
            out[f"circular_acc/{category}"] = float(np.mean([hits[g] for g in {r["group"] for r in rs}]))
    else:
        subtasks = mme_subtask_scores(records)
        out.update(mme_totals(subtasks))
        for subtask, s in sorted(subtasks.items()):
            out.update({f"{key}/{subtask}": s[key] for key in ("score", "acc", "acc_plus")})
    return out


def run_general_vqa(
    answer_batch: BatchAnswerFn, items: Sequence[GeneralVQAItem], batch_size: int = 8
) -> GeneralVQAResult:
    """Ask every item (greedy, `batch_size` per generation) and score it by its benchmark's rules."""
    items = list(items)
    benchmarks = {item.benchmark for item in items}
    if len(benchmarks) != 1:
        raise ValueError(f"run_general_vqa scores one benchmark at a time, got {sorted(benchmarks)}")
    predictions = ask_batched(answer_batch, items, batch_size, lambda item: item.image())
    records = []
    for item, prediction in zip(items, predictions, strict=True):
        score, parsed = score_prediction(item, prediction)
        records.append({
            "id": item.id, "benchmark": item.benchmark, "category": item.category, "group": item.group,
            "question": item.question, "answers": list(item.answers), "prediction": prediction, "parsed": parsed,
            "score": score, "correct": score == 1.0,
        })  # fmt: skip
    benchmark = benchmarks.pop()
    return GeneralVQAResult(benchmark, general_vqa_metrics(benchmark, records), tuple(records))


# --- readers of the released formats ------------------------------------------------------------------


def _short_answer(question: str) -> str:
    return f"{question.strip()}\n{SHORT_ANSWER_PROMPT}"


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    return json.loads(path.read_text(encoding="utf-8"))


VQAV2_QUESTIONS = "v2_OpenEnded_mscoco_{split}_questions.json"
VQAV2_ANNOTATIONS = "v2_mscoco_{split}_annotations.json"


def read_vqav2(root: str | Path, image_root: str | Path | None = None, split: str = "val2014") -> list[GeneralVQAItem]:
    """VQAv2 questions with their annotations (the test splits have none: the paper's test-dev
    numbers come from the EvalAI server); images at image_root (default root/<split>)."""
    root = Path(root)
    questions = _read_json(root / VQAV2_QUESTIONS.format(split=split))
    annotations = {a["question_id"]: a for a in _read_json(root / VQAV2_ANNOTATIONS.format(split=split))["annotations"]}
    subtype = questions.get("data_subtype", split)
    images = Path(image_root) if image_root is not None else root / subtype
    items = []
    for q in questions["questions"]:
        ann = annotations.get(q["question_id"])
        if ann is None:
            raise KeyError(f"question {q['question_id']} has no annotation in {VQAV2_ANNOTATIONS.format(split=split)}")
        path = images / f"COCO_{subtype}_{int(q['image_id']):012d}.jpg"
        items.append(GeneralVQAItem(str(q["question_id"]), VQAV2, _short_answer(q["question"]),
                                    tuple(str(a["answer"]) for a in ann["answers"]), str(q["question_id"]),
                                    str(ann.get("answer_type", "")), image_path=str(path)))  # fmt: skip
    return items


GQA_QUESTIONS = "testdev_balanced_questions.json"


def read_gqa(
    root: str | Path, image_root: str | Path | None = None, questions: str = GQA_QUESTIONS
) -> list[GeneralVQAItem]:
    """GQA test-dev balanced questions (LLaVA-1.5's split); images at image_root (default root/images)."""
    root = Path(root)
    data = _read_json(root / questions)
    images = Path(image_root) if image_root is not None else root / "images"
    return [
        GeneralVQAItem(str(qid), GQA, _short_answer(q["question"]), (str(q["answer"]),), str(qid),
                       str((q.get("types") or {}).get("structural", "")), image_path=str(images / f"{q['imageId']}.jpg"))
        for qid, q in data.items()
    ]  # fmt: skip


def _missing(value: Any) -> bool:
    return value is None or str(value).strip() == "" or str(value).strip().lower() == "nan"


def read_mmbench(path: str | Path) -> tuple[list[GeneralVQAItem], bool]:
    """(items, whether the circular copies came from the file) of an MMBench TSV (or the one
    .tsv in a folder). Rows without an answer (the test split) are skipped. Each question's
    copies share its group (index mod 1e6); a file without copies gets, for a question of n
    options, its n - 1 rotations (copy k shows option j + k at letter j)."""
    path = Path(path)
    if path.is_dir():
        tsvs = sorted(path.glob("*.tsv"))
        if len(tsvs) != 1:
            raise FileNotFoundError(f"expected one MMBench .tsv in {path}, found {len(tsvs)}")
        path = tsvs[0]
    csv.field_size_limit(sys.maxsize)  # base64 images are far longer than csv's default field limit
    with path.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    if rows and not {"index", "question", "answer", "image", "A", "B"} <= set(rows[0]):
        raise KeyError(f"{path.name} lacks MMBench columns (index, question, A, B, answer, image)")
    images = {row["index"]: row["image"] for row in rows}
    from_file = any(int(row["index"]) >= CIRCULAR_OFFSET for row in rows)
    decoded: dict[str, bytes] = {}  # one copy of each image's bytes, shared by the question's copies
    items = []
    for row in rows:
        if _missing(row.get("answer")):
            continue
        options = tuple(
            (letter, str(row[letter]).strip()) for letter in "ABCDEFGHI" if letter in row and not _missing(row[letter])
        )
        # in VLMEvalKit's files a copy's image field may be the index of the row that holds the image
        holder = row["index"] if len(images[row["index"]]) > 64 else images[row["index"]]
        if holder not in decoded:
            decoded[holder] = base64.b64decode(images[holder])
        index = int(row["index"])
        copies = [(index, options, row["answer"].strip())]
        if not from_file:
            copies += [_rotated(index, options, row["answer"].strip(), k) for k in range(1, len(options))]
        for copy_index, shown, answer in copies:
            items.append(GeneralVQAItem(
                str(copy_index), MMBENCH, _mmbench_prompt(row, shown), (answer,), str(index % CIRCULAR_OFFSET),
                str(row.get("category") or ""), shown, image_bytes=decoded[holder],
            ))  # fmt: skip
    return items, from_file


def _rotated(index: int, options: tuple[tuple[str, str], ...], answer: str, k: int) -> tuple[int, tuple, str]:
    """Copy k of a question: letter j shows option (j + k) mod n; the answer letter moves with its text."""
    letters, texts = [o[0] for o in options], [o[1] for o in options]
    n = len(options)
    shown = tuple((letters[j], texts[(j + k) % n]) for j in range(n))
    return index + k * CIRCULAR_OFFSET, shown, letters[(letters.index(answer) - k) % n]


def _mmbench_prompt(row: dict[str, str], options: Sequence[tuple[str, str]]) -> str:
    """LLaVA's model_vqa_mmbench.py (single-prediction prompt): hint, question, options, instruction."""
    question = row["question"].strip()
    if not _missing(row.get("hint")):
        question = f"{row['hint'].strip()}\n{question}"
    lines = [question, *(f"{letter}. {text}" for letter, text in options), MMBENCH_PROMPT]
    return "\n".join(lines)


MME_SUBTASKS = MME_PERCEPTION + MME_COGNITION
_MME_IMAGE_SUFFIXES = (".jpg", ".png", ".jpeg", ".JPG", ".PNG", ".JPEG")


def mme_root(path: str | Path) -> Path:
    """The folder holding MME's subtask folders: path itself or its MME_Benchmark/."""
    path = Path(path)
    if not any((path / s).is_dir() for s in MME_SUBTASKS) and (path / "MME_Benchmark").is_dir():
        return path / "MME_Benchmark"
    return path


def read_mme(path: str | Path) -> list[GeneralVQAItem]:
    """MME's released folders: per subtask, two yes/no questions per image (group = the image)."""
    root = mme_root(path)
    items = []
    for subtask in MME_SUBTASKS:
        folder = root / subtask
        if not folder.is_dir():
            continue
        split = (folder / "images").is_dir() and (folder / "questions_answers_YN").is_dir()
        qa_dir, image_dir = (folder / "questions_answers_YN", folder / "images") if split else (folder, folder)
        for txt in sorted(qa_dir.glob("*.txt")):
            image = next(
                (image_dir / f"{txt.stem}{s}" for s in _MME_IMAGE_SUFFIXES if (image_dir / f"{txt.stem}{s}").is_file()),
                None,
            )
            if image is None:
                raise FileNotFoundError(f"MME {subtask}: no image for {txt.name} in {image_dir}")
            lines = [line for line in txt.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
            for k, line in enumerate(lines):
                question, sep, answer = line.rpartition("\t")
                if not sep or answer.strip().lower() not in ("yes", "no"):
                    raise ValueError(f"MME {subtask}/{txt.name} line {k + 1}: not 'question<TAB>Yes|No'")
                group = f"{subtask}/{txt.stem}"
                items.append(GeneralVQAItem(f"{group}#{k}", MME, _short_answer(question), (answer.strip(),), group,
                                            subtask, image_path=str(image)))  # fmt: skip
    return items


def mme_subtasks_found(items: Iterable[GeneralVQAItem]) -> list[str]:
    """The subtasks the items cover, in MME's order."""
    found = {item.category for item in items}
    return [s for s in MME_SUBTASKS if s in found]
