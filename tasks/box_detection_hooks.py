"""Answer parser of the detection tasks (``vindr_detection``, ``rsna_detection``): every box.

Bare boxes are returned in answer order (``map50`` ranks them by that order); JSON objects
with a score (``{"bbox_2d": [x1, y1, x2, y2], "score": 0.8}``) keep their scores. See
:func:`cxbench.metrics.detection.parse_detections`.
"""

from cxbench.metrics.detection import parse_detection_answer


def parse(text, sample, task):
    return parse_detection_answer(text, sample, task.parser_args)
