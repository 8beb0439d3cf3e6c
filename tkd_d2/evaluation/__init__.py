from .coco import DefectCOCOEvaluator, format_ap_table

__all__ = ["DefectCOCOEvaluator", "format_ap_table"]
