"""The main job's stage table: the one place that says what each stage is.

Execution order; the stage number is what "[stage k/6]" shows. The ``--redo`` choices, the
report's wall-time rows and the commands it lists are read from this table.
"""
from ..errors import ConfigError
from .runner import Stage

__all__ = ["COMMAND_STAGES", "MODELS", "REDO_CHOICES", "REDO_GROUPS", "STAGES", "STAGE_LABELS",
           "expand_redo"]

MODELS = ("teacher", "baseline", "tkd")

STAGES = {
    "data": Stage(1, label="1 data", redo=False),
    "plan": Stage(1, label="1 plan (timing probe)", again="measure again"),
    "teacher": Stage(2, label="2 train teacher", again="train again", command=True, precious=True),
    "baseline": Stage(3, label="3 train baseline student", again="train again", command=True,
                      precious=True),
    "tkd": Stage(3, ("teacher",), label="3 train TKD student", again="train again", command=True,
                 precious=True),
    "eval_teacher": Stage(4, ("teacher",), label="4 evaluate teacher", again="evaluate again",
                          command=True, precious=True),
    "eval_baseline": Stage(4, ("baseline",), label="4 evaluate baseline", again="evaluate again",
                           command=True, precious=True),
    "eval_tkd": Stage(4, ("tkd",), label="4 evaluate TKD student", again="evaluate again",
                      command=True, precious=True),
    "pictures": Stage(5, MODELS, label="5 pictures", again="draw again"),
    "speed": Stage(6, ("teacher", "tkd"), label="6 speed", again="measure again"),
    "deploy": Stage(6, ("tkd",), label="6 export + deploy", again="export again"),
    "report": Stage(6, redo=False),
}
# --redo names for several stages: "eval" is every evaluation, "all" every stage --redo takes
REDO_GROUPS = {"eval": tuple(f"eval_{m}" for m in MODELS),
               "all": tuple(n for n, s in STAGES.items() if s.redo)}


def _redo_choices():
    choices = []
    for name, stage in STAGES.items():
        choices += [g for g, members in REDO_GROUPS.items() if g != "all" and members[0] == name]
        choices += [name] if stage.redo else []
    return choices + ["all"]


REDO_CHOICES = _redo_choices()
# The stages the report's wall-time table lists, as it names them.
STAGE_LABELS = {name: stage.label for name, stage in STAGES.items() if stage.label}
# The trainings and evaluations whose commands the report lists.
COMMAND_STAGES = tuple(name for name, stage in STAGES.items() if stage.command)


def expand_redo(items):
    """The stages named by ``items`` (each one of :data:`REDO_CHOICES`, or several
    comma-separated): ``eval`` is every evaluation, ``all`` every stage but data and report."""
    if isinstance(items, str):
        items = [items]
    redo = set()
    for item in items:
        for name in filter(None, (x.strip() for x in item.split(","))):
            if name not in REDO_CHOICES:
                raise ConfigError(f"--redo {name}: choose from {', '.join(REDO_CHOICES)}")
            redo.update(REDO_GROUPS.get(name, (name,)))
    return redo
