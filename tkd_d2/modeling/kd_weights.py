"""Each KD term's weight, and the loss balancer, from the MODEL.TKD config node."""
from ..distill.balance import LossBalancer
from ..errors import ConfigError

__all__ = ["KD_TERMS", "kd_weights"]

# KD loss name → (its MODEL.TKD.BALANCE share key, its weight key, TKD part, feature term)
KD_TERMS = {
    "loss_crd_cls": ("CRD_CLS", "CRD.CLS_WEIGHT", "crd", False),
    "loss_crd_box": ("CRD_BOX", "CRD.BOX_WEIGHT", "crd", False),
    "loss_crd_ctr": ("CRD_CTR", "CRD.CENTERNESS_WEIGHT", "crd", False),
    "loss_ded_fg": ("DED_FG", "DED.FG_WEIGHT", "ded", True),
    "loss_ded_bg": ("DED_BG", "DED.BG_WEIGHT", "ded", True),
    "loss_ded_ssim": ("DED_SSIM", "DED.SSIM_WEIGHT", "ded", True),
    "loss_drd_instance": ("DRD_INSTANCE", "DRD.INSTANCE_WEIGHT", "drd", True),
    "loss_drd_pixel": ("DRD_PIXEL", "DRD.PIXEL_WEIGHT", "drd", True),
}


def kd_weights(tkd, has_centerness):
    """``(weights, balancer)`` from the MODEL.TKD node: each KD term's weight (0: not
    computed: its part is not in PARTS, its weight or share is 0, or centerness KD without a
    centerness branch) and the LossBalancer (None without balancing).

    MODEL.TKD.BALANCE.ENABLED: every term weighs 1 and has its own group, whose target is its
    share. Else the *_WEIGHT keys (times FEATURE_WEIGHT for DED / DRD), and CALIBRATE_FRACTION
    > 0 balances the feature terms as one group."""
    balance = tkd.BALANCE.ENABLED
    if balance and tkd.CALIBRATE_FRACTION > 0:
        raise ConfigError("MODEL.TKD.CALIBRATE_FRACTION > 0 (joint balance) needs MODEL.TKD.BALANCE.ENABLED "
                          "False: per-term and joint balancing exclude each other")
    weights, shares = {}, {}
    for name, (share_key, weight_key, part, feature) in KD_TERMS.items():
        on = part in tkd.PARTS and (has_centerness or name != "loss_crd_ctr")
        node, key = weight_key.split(".")
        weight = tkd[node][key] * (tkd.FEATURE_WEIGHT if feature else 1.0)
        shares[name] = float(tkd.BALANCE[share_key]) * on
        weights[name] = float(shares[name] > 0) if balance else weight * on
    iters = min(tkd.CALIBRATE_ITERS, max(1, tkd.WARMUP_ITERS))
    if balance:
        groups = {k: (k,) for k, v in shares.items() if v}
        return weights, LossBalancer(groups, {k: shares[k] for k in groups}, iters) if groups else None
    features = tuple(k for k, v in weights.items() if v and KD_TERMS[k][3])
    if tkd.CALIBRATE_FRACTION > 0 and features:
        return weights, LossBalancer({"feature": features}, {"feature": tkd.CALIBRATE_FRACTION}, iters)
    return weights, None
