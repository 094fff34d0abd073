"""The page's words: what each part of it shows."""

INTRO = """
# Few-shot segmentation, one support at a time
Mark an object on a few **support** photos, give a **query** photo, and the model finds that kind of object in the
query, even if it never saw it in training. Supports go through a **ConvLSTM** one after another (after A-MCG,
Hu et al., AAAI 2019), so you see the prediction **after each support**, next to the naive **logical OR** of the
supports' separate 1-shot predictions. Supports are shown with their mask in red, predictions in blue.

**How to:** pick an example below, or upload photos and paint the object with the brush (or upload a mask under
the photo: white = object; a 0/1 mask works too). Paint the true object on the query too (or upload its mask) if you
want each step scored (IoU).
"""

EFFECTS_HELP = """
**What each support did.** *Admission*: how far the model let the support in at all (1 = fully; the support the
ConvLSTM starts from is always let in). *Input gate on the object*: the input gate's mean over the object predicted
at that step (after a new start, see the gates' help: on the final mask).
*Final mask change if left out*: the ConvLSTM run again without that support; 1 − IoU of the two final masks
(0% = the support changed nothing). *IoU effect*: final IoU with the support minus without it (negative: it hurt).
A bad support should show in both: a dim gate, and little effect or a harmful one.
"""

# The gates' help, in parts: the parts on re-judging, self-support and the discriminant are shown only when the
# loaded model's config switches them on (`gates_help`), so a model loaded through FSS_DEMO_WEIGHTS is described as
# it runs.
GATES_INTRO = """
Each row is one support, in the order given: the support, then the mean over channels of each gate, laid over the
query. The **admission** is one number per support: how far the model lets it in at all, from how well it agrees
with the supports already in. It scales the input gate, and at 0 the step changes nothing (the notebooks check this
by forcing it open)."""

REJUDGE_HELP = """Support 1 has nothing before it to be compared with, so from the third support on the model
compares it with each later one: when they let it in at under 0.5 on average, the ConvLSTM starts again from the
support the others let in most, and judges support 1 like any other. The summary then says so, the rows show the
gates of that run (each title says at which of its steps the support went in), and "on the object" means on the
final mask."""

GATES_MEANING = """
Bright means more open (the colours are stretched to the range the gates use in this run, shared by all steps;
the means are on a 0..1 scale): the **input gate** lets the new support's evidence into the memory, the **forget
gate** keeps what earlier supports left there, and the **output gate** decides what of the memory shapes this
step's prediction. Each step's answer is also corrected towards what the supports found on their own (their 1-shot
answers, each entering with its admission), where the memory trusts it: an object only one support shows is kept."""

SELF_SUPPORT_HOW = """where it is sure, it takes an object and a background prototype from the query's own pixels,
and pixels nearer the object one gain (other instances of the class in one photo look more alike than the class
across photos)."""
SELF_SUPPORT_HELP = "Every answer is then refined by the query itself: " + SELF_SUPPORT_HOW
SELF_SUPPORT_GROWS_HELP = ("From the second support on, the answer is then refined by the query itself, more with "
                           "every support let in: " + SELF_SUPPORT_HOW)

DISCRIMINANT_HELP = """From the second support on, the answer also adds a simple classifier fitted on the supports'
own pixels (object against background), each support's pixels weighted by its admission: it gets better with every
support let in."""


def gates_help(config):
    """The gates' help for a model of this ModelConfig: only the mechanisms it runs."""
    first = " ".join([GATES_INTRO] + ([REJUDGE_HELP] if config.rejudge_first else []))
    self_support = SELF_SUPPORT_GROWS_HELP if config.self_support_grows else SELF_SUPPORT_HELP
    second = " ".join([GATES_MEANING] + ([self_support] if config.self_support > 0 else [])
                      + ([DISCRIMINANT_HELP] if config.discriminant > 0 else []))
    return f"{first}\n{second}\n"


ORDER_HELP = """
The ConvLSTM takes the supports one after another, so its answer can depend on their order; the logical OR of the
1-shot masks cannot. Run the supports of the last run again in another order (mask change: 1 − IoU of the two
final masks).
"""

# The per-support table: lines break between words only (not inside "support"), and each number stays whole.
CSS = """
#effects th, #effects td { word-break: normal; overflow-wrap: normal; }
#effects td { white-space: nowrap; }
"""
