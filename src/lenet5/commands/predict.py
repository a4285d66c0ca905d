"""`lenet5 predict`: read the digits or the number in each image. It loads the model forward-only: nothing
of training is imported."""

from __future__ import annotations

from lenet5.commands.model_flag import model_paths
from lenet5.commands.output import print_err, print_json
from lenet5.errors import Lenet5Error


def cmd_predict(args) -> int:
    from lenet5.models import NUM_CLASSES
    from lenet5.predict import load_reader

    if args.top_k < 1 or args.top_k > NUM_CLASSES:
        raise Lenet5Error(f"--top-k must be between 1 and {NUM_CLASSES}, got {args.top_k}")
    paths = model_paths(args)
    predictor = load_reader(paths, engine=args.engine)
    if len(paths) > 1 and args.model:  # a committee the user chose (the bundled reader goes without saying)
        print_err(_committee_line(predictor))
    results = predictor.classify_files(args.images, top_k=args.top_k, save_prepared=args.save_prepared)
    failed = sum("error" in r for r in results)
    if args.json:
        print_json(results)
    else:
        for r in results:
            print(_reading_line(r))
        if args.save_prepared and len(results) > failed:
            print_err(f"prepared 28x28 images written to {args.save_prepared}")
    if failed:
        print_err(f"{failed} of {len(results)} file(s) could not be classified")
    return 1 if failed else 0


def _committee_line(committee) -> str:
    """What a committee reads with (on stderr, so that the readings on stdout keep their form)."""
    from lenet5.checkpoint import BUNDLED_READERS, describe_model

    def name(member) -> str:
        return describe_model(member.path) if member.path in BUNDLED_READERS else member.path.name

    rule = committee.members[committee.rule_index]
    if committee.own_rule is not None:
        whose = "the reject rule fitted for this committee"
    elif rule.fitted_reject:
        whose = f"the reject thresholds of {name(rule)}"
    else:
        whose = f"the default reject rule (not sure below {rule.sure_digit:.0%})"
    names = ", ".join(name(m) for m in committee.members)
    return f"committee of {len(committee.members)} models ({names}): their mean probabilities, {whose}"


def _reading_line(r: dict) -> str:
    """One result of `predict` for humans: the file, the digit or number, how sure, and why not."""
    if "error" in r:
        return f"error: {r['error']}"  # the message names the file
    doubt = (
        f"   NOT SURE: {r['reason']}"
        if r.get("unsure") and r.get("reason")
        else ("   NOT SURE" if r.get("unsure") else "")
    )
    if r.get("digit") is not None:
        others = ", ".join(f"{d} {p:.1%}" for d, p in r["top_k"])
        return f"{r['file']}: {r['digit']}  ({r['probability']:.1%})   top-{len(r['top_k'])}: {others}{doubt}"
    if r.get("number"):
        each = ", ".join(f"{d['digit']} {d['probability']:.1%}" for d in r["digits"])
        return f"{r['file']}: number {r['number']}  ({r['probability']:.1%})   digits: {each}{doubt}"
    return f"{r['file']}: no digit{doubt}"
