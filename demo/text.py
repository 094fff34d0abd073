"""The page's words: what each part of it shows."""

INTRO = """
# Few-shot segmentation, one support at a time
Mark an object on a few **support** photos, give a **query** photo, and the model finds that kind of object in the
query, even if it never saw it in training. Supports go through a **ConvLSTM** one after another (after A-MCG,
Hu et al., AAAI 2019), so you see the prediction **after each support**, next to the naive **logical OR** of the
supports' separate 1-shot predictions. Supports are shown with their mask in red, predictions in blue.

**How to:** pick an example below, or upload photos and paint the object with the brush (or upload a mask under
the photo: white or any nonzero value = object). Paint the true object on the query too (or upload its mask) if you
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

GATES_HELP = """
Each row is one support, in the order given: the support, then the mean over channels of each gate, laid over the
query. The **admission** is one number per support: how far the model lets it in at all, from how well it agrees
with the supports already in. It scales the input gate, and at 0 the step changes nothing (the notebooks check this
by forcing it open). Support 1 has nothing before it to be compared with, so from the third support on the model
compares it with each later one: when they let it in at under 0.5 on average, the ConvLSTM starts again from the
support the others let in most, and judges support 1 like any other. The summary then says so, the rows show the
gates of that run (each title says at which of its steps the support went in), and "on the object" means on the
final mask.
Bright means more open (the colours are stretched to the range the gates use in this run, shared by all steps;
the means are on a 0..1 scale): the **input gate** lets the new support's evidence into the memory, the **forget
gate** keeps what earlier supports left there, and the **output gate** decides what of the memory shapes this
step's prediction. Each step's answer is also corrected towards what the supports found on their own (their 1-shot
answers, each entering with its admission), where the memory trusts it: an object only one support shows is kept.
From the second support on, the answer also adds a simple classifier fitted on the supports' own pixels (object
against background), each support's pixels weighted by its admission: it gets better with every support let in.
"""

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
