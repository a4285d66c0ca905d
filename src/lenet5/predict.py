"""Load a trained LeNet-5 once and read digits: uint8 arrays, image files, folders, globs, .npy stacks.

An image is read as a number: its digits left to right (one digit is the one-element case), each with its
box in the image, its calibrated probabilities and whether the answer is sure. An answer is ``unsure``
(with a ``reason``) when the image holds no digit-like ink (a blank page, a photo of something else) or when
a digit's calibrated probability is below the model's reject threshold. The bundled model's thresholds are
chosen on a risk-coverage curve measured on photo-like scenes (``calibration.reject`` in its metadata): the
highest coverage at which at most 1% of sure single digits and 2% of sure numbers are wrong. A model without
them (one you trained) uses UNSURE_BELOW and its energy floor. A number is sure only when all its digits are.

The model runs forward only (inference.py): the NumPy runner by default, so predicting never imports torch,
or the torch one (``engine="torch"``); a ``.onnx`` model (from ``lenet5 export``) runs through onnxruntime.
"""

from __future__ import annotations

import glob
import math
import threading
from collections import Counter
from pathlib import Path

import numpy as np

from lenet5 import MNIST_MEAN, MNIST_STD
from lenet5.errors import CheckpointError, ImageError, Lenet5Error
from lenet5.metrics import softmax
from lenet5.models import IMAGE_SIZE, NUM_CLASSES

GLOB_CHARS = set("*?[")
UNSURE_BELOW = 0.8  # without a fitted reject rule: a digit whose calibrated probability is lower is unsure
MOST_FROM_ONE_MARK = 3  # this many digits cut from one connected mark: letters or signs, not touching digits
PROBE_LIMIT = 1e4  # logits beyond this on plain probe inputs: the weights are damaged


def input_suffixes() -> tuple[str, ...]:
    """File suffixes predict reads from a folder: the image formats of data/images.py, and .npy stacks."""
    from lenet5.data.images import IMAGE_SUFFIXES

    return (*IMAGE_SUFFIXES, ".npy")


class Predictor:
    """A model loaded once: ``probabilities(uint8 (N, 28, 28)) -> (N, 10)``."""

    def __init__(
        self,
        model,
        model_name: str,
        path: Path,
        mean: float = MNIST_MEAN,
        std: float = MNIST_STD,
        temperature: float = 1.0,
        energy_floor: float | None = None,
        reject: dict | None = None,
        committee_reject: dict | None = None,
    ):
        self.model = model  # a runner of inference.py: logits(x float32 (N,1,28,28)) -> (N, 10), close()
        self.model_name = model_name
        self.path = Path(path)
        self.mean, self.std = float(mean), float(std)
        self.temperature = float(temperature)  # logits are divided by it (calibration.py); 1.0 = uncalibrated
        self.energy_floor = energy_floor  # less evidence than this: not like a training digit (None: not known)
        # the reject rule: sure when every digit's calibrated probability is at least this (one digit / a number)
        reject = reject or {}
        self.sure_digit = float(reject.get("digit", UNSURE_BELOW))
        self.sure_number = float(reject.get("number", self.sure_digit))
        # ... and when the line's best reading beats the runner-up with other digits by at least this (log units)
        self.margin_digit = float(reject.get("digit_margin", 0.0))
        self.margin_number = float(reject.get("number_margin", self.margin_digit))
        self.fitted_reject = bool(reject)
        # the reject rule fitted for this model reading in a committee with the models named in it (Committee)
        self.committee_reject = committee_reject
        self._lock = threading.Lock()  # one forward pass at a time: engines keep scratch buffers

    @classmethod
    def from_checkpoint(cls, path: str | Path, engine: str = "numpy", threads: int = 1) -> Predictor:
        path = Path(path)
        if path.suffix.lower() == ".onnx":
            from lenet5.inference import OnnxModel

            model = OnnxModel(path, threads=1)
            predictor = cls(
                model,
                model.model_name,
                path,
                temperature=model.temperature,
                energy_floor=model.energy_floor,
                reject=getattr(model, "reject", None),
            )
            predictor.probe()
            return predictor
        from lenet5.checkpoint import load_checkpoint
        from lenet5.engines import ENGINES
        from lenet5.inference import NumpyRunner, TorchRunner

        if engine not in ENGINES:
            raise Lenet5Error(f"unknown engine {engine!r}; engines are: {', '.join(ENGINES)}")

        ckpt = load_checkpoint(path)
        runner = TorchRunner if engine == "torch" else NumpyRunner
        try:  # forward only; numpy with threads > 1 (evaluate's 10,000 images) shares them out to worker processes
            net = runner(ckpt.model, ckpt.weights, threads=threads)
        except ValueError as exc:
            raise CheckpointError(f"{path}: {exc}") from None
        norm = ckpt.meta.get("normalization") or {}
        calibration = ckpt.meta.get("calibration") or {}
        predictor = cls(
            net,
            ckpt.model,
            path,
            norm.get("mean", MNIST_MEAN),
            norm.get("std", MNIST_STD),
            calibration.get("temperature", 1.0),
            calibration.get("energy_floor"),
            calibration.get("reject"),
            calibration.get("committee_reject"),
        )
        try:
            predictor.probe()
        except BaseException:
            predictor.close()  # the runner's worker processes, if it started any
            raise
        return predictor

    def close(self) -> None:
        """Give back what the model's runner holds (worker processes); the predictor is not used after."""
        close = getattr(self.model, "close", None)
        if close is not None:
            close()

    def probe(self) -> None:
        """Read a blank field and a bar once: a model whose outputs are not finite and moderate there (weights
        or normalization out of range) would answer every image with nonsense; CheckpointError now instead."""
        bar = np.zeros((2, IMAGE_SIZE, IMAGE_SIZE), np.uint8)
        bar[1, 4:-4, IMAGE_SIZE // 2 - 2 : IMAGE_SIZE // 2 + 2] = 255
        with self._lock, np.errstate(all="ignore"):
            logits = np.asarray(self.model.logits(self.normalize(bar)), dtype=np.float64)
        if logits.shape != (2, NUM_CLASSES) or not np.isfinite(logits).all() or np.abs(logits).max() > PROBE_LIMIT:
            raise CheckpointError(
                f"{self.path.name}: the model's outputs are out of range on a plain test input "
                "(damaged weights or normalization); retrain it or use another checkpoint"
            )

    def normalize(self, images: np.ndarray) -> np.ndarray:
        """uint8 (N, 28, 28) -> float32 (N, 1, 28, 28), the way the model was trained."""
        if self.mean == MNIST_MEAN and self.std == MNIST_STD:
            from lenet5.data.datasets import normalize

            return normalize(images)
        x = images.astype(np.float32) / 255.0
        return ((x - np.float32(self.mean)) / np.float32(self.std))[:, None, :, :]

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """uint8 (N, 28, 28) MNIST-style digits -> float64 (N, 10) calibrated class probabilities."""
        return softmax(self.logits(images) / self.temperature)

    def logits(self, images: np.ndarray) -> np.ndarray:
        """uint8 (N, 28, 28) MNIST-style digits -> float64 (N, 10) raw logits (CheckpointError when NaN)."""
        images = np.asarray(images)
        if images.ndim == 2:
            images = images[None]
        if images.ndim != 3 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
            raise ValueError(f"expected uint8 (N, 28, 28), got shape {images.shape}")
        with self._lock, np.errstate(over="ignore", invalid="ignore"):  # judged below, not warned about
            logits = np.asarray(self.model.logits(self.normalize(images)), dtype=np.float64)
        if np.isnan(logits).any():
            raise CheckpointError(
                f"{self.path.name}: the model's outputs are NaN for this input: its weights are "
                "out of range (a damaged or diverged checkpoint)"
            )
        return logits

    def log_probabilities(self, images: np.ndarray) -> np.ndarray:
        """uint8 (N, 28, 28) -> (N, 10) calibrated log-probabilities: what the number reader
        (data.digits.read_line) scores candidate digits with."""
        return np.log(self.probabilities(images) + 1e-12)

    def doubts(self, logits: np.ndarray, probs: np.ndarray, threshold: float) -> list[str | None]:
        """Why each reading is unsure (None: sure): a calibrated probability under ``threshold``, or, for a model
        without a fitted reject rule, less evidence (energy) than its validation digits."""
        from lenet5.calibration import energy

        evidence = energy(logits)
        out = []
        for p, e in zip(probs.max(axis=1), evidence):
            if not self.fitted_reject and self.energy_floor is not None and e < self.energy_floor:
                out.append("it does not look like the digits the model knows (a letter, a sign, a scribble?)")
            elif p < threshold:
                out.append(
                    f"low confidence ({percent(p, threshold)} < {percent(threshold, threshold)}): not clearly one digit"
                )
            else:
                out.append(None)
        return out

    def judge(self, fields: np.ndarray, number: bool = False) -> tuple[np.ndarray, list[str | None]]:
        """uint8 (N, 28, 28) -> calibrated probabilities (N, 10) and why each reading is unsure (None: sure);
        ``number``: the fields are the digits of one number, judged by the number's threshold."""
        logits = self.logits(fields)
        probs = softmax(logits / self.temperature)
        return probs, self.doubts(logits, probs, self.sure_number if number else self.sure_digit)

    def read(
        self, digits: list, problem: str | None, top_k: int = 3, probabilities: bool = False
    ) -> tuple[dict, list[np.ndarray]]:
        """Found digits (data.digits.Digit, left to right) -> the reading and the fields the network saw.

        The reading: ``number`` (str or None), ``digits`` [{digit, probability, box, top_k, unsure}, plus
        ``probabilities`` (10 floats) when asked], ``confidence`` (the lowest of the digits' probabilities),
        ``margin`` (how much better, in log units, the line's reading scored than its runner-up with other
        digits, data.digits.Line; null when there was none), ``left_out`` (marks beside the digits, heavy enough
        for a digit, that were not read), ``unsure`` and ``reason``; one digit also gives ``digit``,
        ``probability``, ``top_k`` (and ``probabilities``). A reading is sure when its confidence and its margin
        both reach the model's reject rule, nothing was left unread, and no mark fell apart into the strokes of
        something else (strokes_read_as_digits).
        """
        if not digits:
            return {
                "number": None,
                "digit": None,
                "probability": None,
                "confidence": 0.0,
                "digits": [],
                "unsure": True,
                "reason": problem or "no digit found",
            }, []
        fields = [d.field for d in digits]
        number = len(fields) > 1
        probs, doubts = self.judge(np.stack(fields), number=number)
        described = [
            {**describe(p, top_k), "box": list(d.box), "unsure": why is not None}
            for d, p, why in zip(digits, probs, doubts)
        ]
        if probabilities:
            for d, p in zip(described, probs):
                d["probabilities"] = [round(float(v), 6) for v in p]
        reading: dict = {"number": "".join(str(d["digit"]) for d in described)}
        if len(described) == 1:
            reading.update({k: v for k, v in described[0].items() if k != "unsure"})
        else:
            reading["probability"] = round(math.prod(d["probability"] for d in described), 6)
        margin, rival = digits[0].margin, digits[0].rival
        reading["confidence"] = round(min(d["probability"] for d in described), 6)
        reading["margin"] = round(margin, 4) if math.isfinite(margin) else None  # JSON has no infinity
        reading["digits"] = described
        doubtful = [(i, why) for i, why in enumerate(doubts) if why]
        least_margin = self.margin_number if number else self.margin_digit
        left_out = digits[0].left_out
        reading["left_out"] = left_out
        strokes = strokes_read_as_digits(digits, [d["digit"] for d in described])
        reading["unsure"] = bool(doubtful) or margin < least_margin or left_out > 0 or strokes is not None
        if doubtful:
            i, why = doubtful[0]
            reading["reason"] = why if len(described) == 1 else f"digit {i + 1} of {len(described)}: {why}"
        elif strokes is not None:
            reading["reason"] = (
                f"{strokes} read from one mark: the strokes of a letter or a sign rather than digits that touch?"
            )
        elif left_out:
            reading["reason"] = (
                f"{left_out} mark{'s' if left_out > 1 else ''} beside the digits read "
                f"{'were' if left_out > 1 else 'was'} not read: a digit that looked like an edge "
                "or a line, or a mark across the number?"
            )
        elif reading["unsure"]:
            reading["reason"] = (
                f"the ink could almost as well be read as {rival or 'other digits'} (that reading "
                f"scores {margin:.2f} less, under the {least_margin:.2f} a sure cut needs)"
            )
        return reading, fields

    def read_image_bytes(self, data: bytes, name: str, top_k: int = 3) -> tuple[dict, list[np.ndarray]]:
        """An image file's bytes -> its reading (see ``read``); ImageError when it cannot be decoded."""
        from lenet5.data.images import read_bytes

        return self.read(*read_bytes(data, name, score=self.log_probabilities), top_k=top_k)

    def classify_files(self, inputs: list[str], top_k: int = 3, save_prepared: str | Path | None = None) -> list[dict]:
        """Files, folders and globs -> one result per image (its reading, see ``read``) or per digit of a
        .npy stack, or {file, error}. A failed file never stops the others."""
        from lenet5.data.images import load_npy, read_file_bytes

        results: list[dict] = []
        prepared: list[tuple[str, np.ndarray]] = []  # (file name stem for --save-prepared, uint8 (28, 28))
        found = expand_inputs(inputs)
        stems = Counter(Path(name).stem for name, problem in found if not problem)

        def stem_of(name: str) -> str:  # x.png and x.jpg -> x_png and x_jpg, so that one can tell which is which
            path = Path(name)
            return path.stem if stems[path.stem] == 1 else f"{path.stem}_{path.suffix.lstrip('.').lower()}"

        for name, problem in found:
            if problem:
                results.append({"file": name, "error": problem})
                continue
            try:
                if name.lower().endswith(".npy"):  # a stack of MNIST-style digits: one result per digit, file[i]
                    stack = load_npy(Path(name))
                    probs, doubts = self.judge(stack)
                    for i, (digit, p, why) in enumerate(zip(stack, probs, doubts)):
                        row = {"file": f"{name}[{i}]", **describe(p, top_k), "unsure": why is not None}
                        results.append({**row, "reason": why} if why else row)
                        prepared.append((f"{stem_of(name)}_{i}", digit))
                    continue
                reading, fields = self.read_image_bytes(read_file_bytes(Path(name)), name, top_k)
            except ImageError as exc:
                results.append({"file": name, "error": str(exc)})
                continue
            results.append({"file": name, **reading})
            stem = stem_of(name)
            prepared.extend((stem if len(fields) == 1 else f"{stem}_{i + 1}", f) for i, f in enumerate(fields))
        if save_prepared is not None and prepared:
            write_prepared(prepared, Path(save_prepared))
        return results


class Committee(Predictor):
    """Several models read as one (a committee, Ciresan et al. 2012): the mean of the members' calibrated
    probabilities, each member with its own normalization and temperature.

    The reject rule: the one fitted for this very committee when the first member carries one
    (``calibration.committee_reject``, written by benchmarks/reject_rule.py with several models; it names the
    other members by their files' SHA-256, so it is used only with those members, in that order): the bundled
    reader is such a committee. Otherwise the first member's that has a fitted rule (else the first member's
    default): it was fitted for that model alone, and the committee's top probability is never above the
    mean of its members' top probabilities, so it is, if anything, strict for the committee. A committee of
    one model reads as that model."""

    def __init__(self, members: list[Predictor]):
        if not members:
            raise ValueError("a committee needs at least one model")
        check_members_agree(members)
        self.rule_index = next((i for i, m in enumerate(members) if m.fitted_reject), 0)
        rule = members[self.rule_index]  # the member whose reject rule and energy floor the committee uses
        names = {m.model_name for m in members}
        super().__init__(None, names.pop() if len(names) == 1 else "committee", members[0].path)
        self.members = list(members)
        self.energy_floor = rule.energy_floor
        self.sure_digit, self.sure_number = rule.sure_digit, rule.sure_number
        self.margin_digit, self.margin_number = rule.margin_digit, rule.margin_number
        self.fitted_reject = rule.fitted_reject
        self.own_rule = fitted_for(members)
        if self.own_rule is not None:
            self.rule_index = 0
            self.sure_digit, self.sure_number = self.own_rule["digit"], self.own_rule["number"]
            self.margin_digit = self.own_rule.get("digit_margin", 0.0)
            self.margin_number = self.own_rule.get("number_margin", self.margin_digit)
            self.energy_floor, self.fitted_reject = members[0].energy_floor, True

    @classmethod
    def from_checkpoints(cls, paths: list[Path], engine: str = "numpy", threads: int = 1) -> Committee:
        """Load every member; CheckpointError naming the member (and its file) that cannot be one."""
        members: list[Predictor] = []
        try:
            for i, path in enumerate(paths, start=1):
                try:
                    members.append(Predictor.from_checkpoint(path, engine=engine, threads=threads))
                except CheckpointError as exc:
                    raise CheckpointError(f"committee member {i} of {len(paths)}: {exc}") from None
            return cls(members)
        except BaseException:
            for member in members:
                member.close()
            raise

    def close(self) -> None:
        for member in self.members:
            member.close()

    def probe(self) -> None:
        """Each member probes itself as it is loaded (Predictor.from_checkpoint)."""

    def member_outputs(self, images: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
        """uint8 (N, 28, 28) -> (each member's raw logits, the committee's (N, 10) calibrated probabilities)."""
        logits = [m.logits(images) for m in self.members]
        probs = np.mean([softmax(z / m.temperature) for z, m in zip(logits, self.members)], axis=0)
        return logits, probs

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """uint8 (N, 28, 28) -> float64 (N, 10): the mean of the members' calibrated probabilities."""
        return self.member_outputs(images)[1]

    def logits(self, images: np.ndarray) -> np.ndarray:
        """The log of the committee's probabilities: logits whose softmax (temperature 1) is the committee's
        probabilities, for code that asks any predictor for logits."""
        return np.log(np.maximum(self.probabilities(images), np.finfo(np.float64).tiny))

    def judge(self, fields: np.ndarray, number: bool = False) -> tuple[np.ndarray, list[str | None]]:
        """As Predictor.judge, on the committee's probabilities; the evidence (energy) that a field looks like a
        digit at all is the reject rule's member's, on its own logits (its energy floor is its own)."""
        logits, probs = self.member_outputs(fields)
        return probs, self.doubts(logits[self.rule_index], probs, self.sure_number if number else self.sure_digit)


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes, read in blocks (a big .pth member costs no second copy in memory)."""
    import hashlib

    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def fitted_for(members: list[Predictor]) -> dict | None:
    """The reject rule the first member carries for a committee with exactly these other members (their
    files' SHA-256, in order), or None."""
    rule = members[0].committee_reject
    if len(members) < 2 or not isinstance(rule, dict):
        return None
    partners = rule.get("partners")
    if not isinstance(partners, list) or len(partners) != len(members) - 1:
        return None
    try:
        if [file_sha256(m.path) for m in members[1:]] != partners:
            return None
    except OSError:
        return None
    return {key: float(rule[key]) for key in ("digit", "number", "digit_margin", "number_margin") if key in rule}


def load_reader(paths: list[Path], engine: str = "numpy", threads: int = 1) -> Predictor:
    """What reads people's images (``predict``, ``serve``, the benchmarks): one checkpoint's Predictor, or a
    Committee of several; the bundled reader is a committee of BUNDLED_READERS (checkpoint.py)."""
    if len(paths) == 1:
        return Predictor.from_checkpoint(paths[0], engine=engine, threads=threads)
    return Committee.from_checkpoints(list(paths), engine=engine, threads=threads)


def check_members_agree(members: list[Predictor]) -> None:
    """Members of a committee read the same input (a 28x28 digit) into the same classes: each gives one row
    of NUM_CLASSES for a blank digit, else CheckpointError naming the file that does not. (Loading already
    holds every model to that shape: checkpoint shapes, the ONNX signature; this says it for the committee.)"""
    blank = np.zeros((1, IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    for i, member in enumerate(members, start=1):
        try:
            shape = member.logits(blank).shape
        except ValueError as exc:
            shape = str(exc)
        if shape != (1, NUM_CLASSES):
            raise CheckpointError(
                f"committee member {i} of {len(members)}: {member.path}: does not read a {IMAGE_SIZE}x{IMAGE_SIZE} "
                f"digit into {NUM_CLASSES} classes as the others do (it gives {shape})"
            )


def strokes_read_as_digits(digits: list, read: list[int]) -> str | None:
    """The digits read from one connected mark when they look like the strokes of something else (a W read
    as 1111, an H as 11): MOST_FROM_ONE_MARK or more digits, or several that are all 1s. Touching digits are
    mostly pairs of other digits; printed letters fall apart into 1s. None when no mark looks like that."""
    by_mark: dict[int, list[int]] = {}
    for d, digit in zip(digits, read):
        by_mark.setdefault(d.mark, []).append(digit)
    for found in by_mark.values():
        if len(found) >= MOST_FROM_ONE_MARK or (len(found) > 1 and set(found) == {1}):
            return "".join(map(str, found))
    return None


def percent(p: float, threshold: float) -> str:
    """p as a percentage with as many decimals as telling it from ``threshold`` takes (99.99960%, not 100%)."""
    decimals = 0 if threshold <= 0.99 else min(6, math.ceil(-math.log10(max(1.0 - threshold, 1e-9))) - 1)
    return f"{100 * p:.{decimals}f}%"


def describe(probs: np.ndarray, top_k: int) -> dict:
    """One row of probabilities -> {digit, probability, top_k: [[digit, probability], ...]}."""
    order = np.argsort(-probs, kind="stable")[: max(1, top_k)]
    return {
        "digit": int(order[0]),
        "probability": round(float(probs[order[0]]), 6),
        "top_k": [[int(d), round(float(probs[d]), 6)] for d in order],
    }


def expand_inputs(inputs: list[str]) -> list[tuple[str, str | None]]:
    """Files as given, folders -> their image/.npy files (sorted), globs -> matches (sorted).
    Returns (path, None) or (what was given, error message)."""
    out: list[tuple[str, str | None]] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(str(p) for p in path.iterdir() if p.is_file() and p.suffix.lower() in input_suffixes())
            if not found:
                out.append((item, f"{item}: folder holds no images ({', '.join(input_suffixes())})"))
            out.extend((f, None) for f in found)
        elif path.exists():
            out.append((item, None))
        elif GLOB_CHARS & set(item):
            found = sorted(p for p in glob.glob(item) if Path(p).is_file())
            if not found:
                out.append((item, f"{item}: no files match this pattern"))
            out.extend((f, None) for f in found)
        else:
            out.append((item, f"{item}: no such file"))
    return out


def write_prepared(prepared: list[tuple[str, np.ndarray]], folder: Path) -> list[Path]:
    """Write each prepared 28x28 digit as <stem>.png in folder (numbered when names repeat)."""
    from lenet5.data.images import save_png

    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise Lenet5Error(f"--save-prepared {folder}: cannot create the folder ({exc.strerror or exc})") from None
    written, used = [], set()
    for base, digit in prepared:
        name, n = f"{base}.png", 1
        while name in used:
            n += 1
            name = f"{base}-{n}.png"
        used.add(name)
        save_png(digit, folder / name)
        written.append(folder / name)
    return written
