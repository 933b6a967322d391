"""Label vocabularies shared by data adapters, parsers, baselines and metrics."""

from __future__ import annotations

#: The 14 thoracic diseases of NIH ChestX-ray14, used by the top-1 diagnosis task
#: (Rui-CXR-style mean recall@1) and by the phantom generator. Lower-case display names.
DISEASES_14: tuple[str, ...] = (
    "atelectasis",
    "cardiomegaly",
    "pleural effusion",
    "infiltration",
    "mass",
    "nodule",
    "pneumonia",
    "pneumothorax",
    "consolidation",
    "edema",
    "emphysema",
    "fibrosis",
    "pleural thickening",
    "hernia",
)

#: Synonyms a model may use for each disease; matched case-insensitively by the parser.
DISEASE_SYNONYMS: dict[str, tuple[str, ...]] = {
    "atelectasis": ("atelectasis", "atelectatic", "volume loss", "collapse"),
    "cardiomegaly": ("cardiomegaly", "enlarged heart", "cardiac enlargement", "enlarged cardiac silhouette"),
    "pleural effusion": ("pleural effusion", "effusion", "pleural fluid"),
    "infiltration": ("infiltration", "infiltrate", "infiltrates"),
    "mass": ("mass", "masses"),
    "nodule": ("nodule", "nodules", "nodular opacity"),
    "pneumonia": ("pneumonia",),
    "pneumothorax": ("pneumothorax",),
    "consolidation": ("consolidation", "airspace consolidation"),
    "edema": ("edema", "oedema", "pulmonary edema", "vascular congestion"),
    "emphysema": ("emphysema", "hyperinflation", "hyperinflated"),
    "fibrosis": ("fibrosis", "fibrotic", "interstitial fibrosis"),
    "pleural thickening": ("pleural thickening", "thickened pleura", "pleural thickness"),
    "hernia": ("hernia", "hiatal hernia", "hiatus hernia"),
}

#: The 14 CheXpert observations in the official order (CheXpert labeler, CheXbert, clinical F1).
CHEXPERT_14: tuple[str, ...] = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Lesion",
    "Lung Opacity",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)
#: The five common observations of the "-5" clinical F1 variants.
CHEXPERT_5: tuple[str, ...] = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")

#: Change labels of the temporal comparison task (prior -> current).
CHANGE_LABELS: tuple[str, ...] = ("improved", "stable", "worsened")
