"""The student's own anchor assignment of a training step, kept for CRD.

detectron2's dense detectors assign the ground truth inside ``forward_training``
(``anchors = self.anchor_generator(features)``, ``self.label_anchors(anchors, gt_instances)``)
and return only the losses. CRD needs the same anchors and labels (ignored anchors, positives,
the trusted-where-better test); :func:`keep_assignment` records them as ``forward_training``
makes them, so a step assigns once, on any detectron2 whose ``forward_training`` calls
``self.label_anchors``.
"""
from contextlib import contextmanager

__all__ = ["keep_assignment"]


@contextmanager
def keep_assignment(detector):
    """Inside the block, ``detector.label_anchors`` also records its arguments and result in
    the yielded dict (keys ``anchors``, ``labels``, ``matched_boxes``; empty if it was not
    called). The detector's own method is back when the block ends, error or not."""
    kept = {}
    own = detector.label_anchors  # the bound method, or an instance attribute already there
    shadowed = "label_anchors" in vars(detector)

    def label_anchors(anchors, gt_instances):
        labels, matched_boxes = own(anchors, gt_instances)
        kept.update(anchors=anchors, labels=labels, matched_boxes=matched_boxes)
        return labels, matched_boxes

    detector.label_anchors = label_anchors  # an instance attribute shadows the method
    try:
        yield kept
    finally:
        if shadowed:
            detector.label_anchors = own
        else:
            del detector.label_anchors
