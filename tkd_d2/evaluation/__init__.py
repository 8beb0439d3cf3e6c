from .coco import (RESULTS_FILE, DefectCOCOEvaluator, format_ap_table, load_ap_results,
                   per_class_ap50, per_class_ap50_of)

__all__ = ["DefectCOCOEvaluator", "format_ap_table", "load_ap_results", "per_class_ap50",
           "per_class_ap50_of", "RESULTS_FILE"]
