"""What a report is about, read from its words: modality and body region cues, and how many of a
template's variables it mentions (the content score routing uses).

Pure text work for `mappings.routing` (mappings may not import workers, so this is a light
term count, not stage 1): a variable counts as mentioned when one of its synonyms (any
language, negated or not: "geen microbloedingen" still says the report is a memory-clinic
MRI), one of its options' synonyms, or one of its value patterns occurs in the text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from mappings.dicom import MODALITY_FAMILIES
from mappings.template import Template

# Body regions: the body-part words (HL7 OBR-15.4, FHIR bodySite, a template's body_parts)
# that name a region, in English, Dutch and German.
BODY_REGIONS: dict[str, str] = {
    "BRAIN": "brain", "HEAD": "brain", "CEREBRUM": "brain", "SKULL": "brain", "CRANIUM": "brain",
    "NEURO": "brain", "HERSENEN": "brain", "BREIN": "brain", "SCHEDEL": "brain",
    "SCHÄDEL": "brain", "SCHAEDEL": "brain", "KOPF": "brain", "GEHIRN": "brain", "HIRN": "brain",
    "HEART": "heart", "CARDIAC": "heart", "CMR": "heart", "HERZ": "heart", "HART": "heart",
    "CHEST": "chest", "THORAX": "chest", "LUNG": "chest", "LUNGS": "chest", "LONGEN": "chest",
    "LUNGE": "chest",
    "ABDOMEN": "abdomen", "ABDOMENPELVIS": "abdomen", "ABDOMEN_PELVIS": "abdomen",
    "KIDNEY": "abdomen", "KIDNEYS": "abdomen", "RENAL": "abdomen", "LIVER": "abdomen",
    "GALLBLADDER": "abdomen", "APPENDIX": "abdomen", "BUIK": "abdomen", "BOVENBUIK": "abdomen",
    "BAUCH": "abdomen", "OBERBAUCH": "abdomen", "NIER": "abdomen", "NIEREN": "abdomen",
    "LEVER": "abdomen", "LEBER": "abdomen",
    "PELVIS": "pelvis", "BEKKEN": "pelvis", "BECKEN": "pelvis",
    "BREAST": "breast", "BREASTS": "breast", "MAMMA": "breast", "MAMMAE": "breast",
    "BORST": "breast", "BRUST": "breast",
    "THYROID": "thyroid", "NECK": "thyroid", "SCHILDKLIER": "thyroid", "SCHILDDRÜSE": "thyroid",
    "SCHILDDRUESE": "thyroid", "HALS": "thyroid",
    "KNEE": "limb", "WRIST": "limb", "ANKLE": "limb", "HIP": "limb", "SHOULDER": "limb",
    "ELBOW": "limb", "HAND": "limb", "FOOT": "limb", "FINGER": "limb", "TOE": "limb",
    "FOREARM": "limb", "HUMERUS": "limb", "FEMUR": "limb", "TIBIA": "limb", "LEG": "limb",
    "ARM": "limb", "CLAVICLE": "limb", "EXTREMITY": "limb", "KNIE": "limb", "POLS": "limb",
    "ENKEL": "limb", "HEUP": "limb", "SCHOUDER": "limb", "ELLEBOOG": "limb", "VOET": "limb",
    "HANDGELENK": "limb", "SPRUNGGELENK": "limb", "HÜFTE": "limb", "HUEFTE": "limb",
    "SCHULTER": "limb", "ELLENBOGEN": "limb", "FUSS": "limb", "FUẞ": "limb",
}  # fmt: skip
"""A neck ultrasound is a thyroid ultrasound here (no other neck template); the pelvis is its own
region, shared by the abdomen (CT/US) and the radiograph (hip and pelvis) templates."""

_FLAGS = re.IGNORECASE
# Modality words in an exam line ("MRI hersenen", "Kardio-MRT", "X-thorax", "CXR AP portable").
_MODALITY_WORDS: dict[str, re.Pattern[str]] = {
    "MR": re.compile(
        r"\b(?:MRI|MRT|MR|NMR|CMR|MRA|MRS)\b|magnetic resonance|magnetresonanz\w*|kernspin\w*",
        _FLAGS,
    ),
    "CT": re.compile(
        r"\b(?:CT|HRCT|LDCT|CTA|MSCT|CECT)\b|computed tomogra\w*|computertomogra\w*", _FLAGS
    ),
    "XR": re.compile(
        r"\b(?:CXR|XR|RX|X-?rays?|x-?thorax|x-?thx|radiograph\w*|r[öo]e?ntgen\w*|thoraxfoto\w*|"
        r"thoraxr[öo]ntgen\w*|film|portable)\b|\bPA\s*(?:/|and|en|und|&)\s*(?:LAT|lateral|lateraal|"
        r"seitlich)\b|\b(?:PA|AP)\s+(?:chest|view|supine|upright|erect)\b",
        _FLAGS,
    ),
    "US": re.compile(r"\b(?:US|ultrasound|echografie|sonograph\w*|sonografie)\b", _FLAGS),
    "PT": re.compile(r"\bPET\b", _FLAGS),
    "NM": re.compile(r"\b(?:SPECT|scintigra\w*|szintigra\w*)\b", _FLAGS),
    "MG": re.compile(r"\b(?:mammogra\w*)\b", _FLAGS),
}
# Region words in an exam line.
_REGION_WORDS: dict[str, re.Pattern[str]] = {
    "brain": re.compile(
        r"\b(?:brain|head|cerebr\w*|crani\w*|kranial|intracranial|neuro\w*|hersenen|brein|"
        r"schedel|sch[äa]e?dels?|skull|kopf\w*|hirn\w*|gehirn\w*|neurocranium)\b",
        _FLAGS,
    ),
    "heart": re.compile(
        r"\b(?:heart|hearts|cardiac|cardio(?!pulmonary)\w*|cardial\w*|cardiale|kardi\w*|herz\w*|hart|CMR|"
        r"myocard\w*|myokard\w*)\b",
        _FLAGS,
    ),
    "chest": re.compile(
        r"\b(?:chest|thorax|thoraxfoto\w*|lungs?|longen|lunge|pulmonary|"
        r"x-?thorax|x-?thx|CXR)\b|흉부",
        _FLAGS,
    ),
    "abdomen": re.compile(
        r"\b(?:abdomen|abdominal\w*|abdomens?|buik|bovenbuik|bauch|oberbauch\w*|"
        r"abdomensonogra\w*|liver|lever|leber|kidneys?|nieren?|nier|renal|KUB|gallbladder|"
        r"galblaas|gallenblase|appendix|urogra\w*|A/P)\b",
        _FLAGS,
    ),
    "pelvis": re.compile(r"\b(?:pelvis|pelvic|bekken|becken)\b", _FLAGS),
    "breast": re.compile(r"\b(?:breasts?|mamma\w*|mammo\w*|borst\w*|brust\w*|mamille)\b", _FLAGS),
    "thyroid": re.compile(
        r"\b(?:thyroid\w*|schildklier\w*|schilddr[üu]e?s\w*|struma|(?<!gallbladder )neck|"
        r"(?<!de )hals)\b",
        _FLAGS,
    ),
    "limb": re.compile(
        r"\b(?:knees?|knie|shoulders?|schouder|schulter|hips?|heup|h[üu]e?fte|extremit\w*|"
        r"ankles?|enkel|wrists?|pols|handgelenk\w*|sprunggelenk\w*|foot|feet|voet|fu[ßs]|"
        r"hand|hands|handen|h[äa]e?nde|elbows?|elleboog|ellenbogen|fingers?|toes?|forearm|"
        r"humerus|femur|tibia|"
        r"fibula|clavicle|leg|arm|ginocchio)\b",
        _FLAGS,
    ),
    "other": re.compile(
        r"\b(?:spine|spinal|wervelkolom|wirbels[äa]ule|[LCT]-?spine|lumbar|lumbal\w*|LWS|HWS|"
        r"BWS|cervical|thoracic spine|prostat\w*|orbit\w*|sinus\w*|aorta|aortic|IR|"
        r"whole[- ]?body|total body|ganzk[öo]rper\w*)\b",
        _FLAGS,
    ),
}
# Region words in the body of a report (used only when neither the body part nor the exam
# line says where the exam is): distinctive anatomy and findings of each region.
_REGION_TEXT: dict[str, re.Pattern[str]] = {
    "brain": re.compile(
        r"\b(?:brain|cerebr\w*|intracran\w*|intrakran\w*|hersen\w*|hirn\w*|hippocamp\w*|"
        r"white matter|witte stof\w*|marklager\w*|thalam\w*|basal ganglia|basale kernen|"
        r"basalganglien|cerebell\w*|zerebell\w*|pons|corpus callosum|sulci|gyrus|gyri|falx|"
        r"sylvi\w*|microbl\w*|mikroblut\w*|fazekas|dementi\w*|demenz\w*|geheugen\w*|"
        r"frontal lobe|temporal lobe|parietal lobe|occipital lobe|frontaalkwab\w*|"
        r"temporaalkwab\w*|subdural\w*|subduraa?l\w*|extradural|epidural\w*|epiduraa?l\w*|"
        r"subarachno\w*|calvari\w*|midline shift|contrecoup|schedel\w*|sch[äa]del\w*|skull)\b",
        _FLAGS,
    ),
    "heart": re.compile(
        r"\b(?:myocard\w*|myokard\w*|pericard\w*|perikard\w*|LVEF|RVEF|LV-EF|RV-EF|LGE|"
        r"ejection fraction|ejektionsfraktion|cardiomyopath\w*|kardiomyopath\w*|"
        r"late (?:gadolinium )?enhancement|left ventric\w*|linke[rn]? ventrikel|"
        r"linksventrikul\w*|septum|septal)\b",
        _FLAGS,
    ),
    "abdomen": re.compile(
        r"\b(?:liver|hepatic|lever|leber|gallbladder|galblaas|gallenblase|gallstones?|"
        r"galst\w*|gallenst\w*|bile ducts?|galwegen|gallenwege|CBD|DHC|kidneys?|renal|nier\w*|"
        r"spleen|splenic|milt|milz|pancrea\w*|append\w*|bowel|colon|sigm\w*|ascites|aszites|"
        r"ureter\w*|harnleiter\w*|bladder|harnblase|blaas|abdom\w*|bauch\w*|buik|duoden\w*|"
        r"peritone\w*|douglas|hydronephros\w*|hydronefros\w*|harnstau\w*|cholecyst\w*|"
        r"choledoch\w*|adrenal\w*|bijnier\w*|nebenniere\w*|diverticul\w*|divertikul\w*)\b",
        _FLAGS,
    ),
    "breast": re.compile(
        r"\b(?:breasts?|mamma\w*|mammo\w*|borst\w*|brust\w*|nipple|tepel|mamille|areola\w*|"
        r"axilla\w*|oksel\w*|BI-?RADS|fibroglandular|parenchymdichte|klierweefsel|ACR [a-d])\b|"
        r"\b\d{1,2}\s*(?:o'?clock|uur|Uhr)\b",
        _FLAGS,
    ),
    "thyroid": re.compile(
        r"\b(?:thyroid\w*|schildklier\w*|schilddr[üu]e?s\w*|isthmus|TI-?RADS|TR[1-5]|"
        r"struma|goit\w*|knotenfrei|multinodul\w*)\b",
        _FLAGS,
    ),
    "limb": re.compile(
        r"\b(?:radius\w*|ulna\w*|tibia\w*|fibula\w*|femur\w*|femoral|humer\w*|patell\w*|"
        r"malleol\w*|scaphoid|metacarp\w*|metatars\w*|phalan\w*|calcane\w*|talus|clavic\w*|"
        r"olecranon|acetabul\w*|knees?|knie\w*|wrist|pols|handgelenk\w*|ankle|enkel\w*|"
        r"sprunggelenk\w*|elbow|elleboog|ellenbogen|shoulder|schouder|schulter\w*|hip|heup|"
        r"h[üu]fte|gonarthros\w*|coxarthros\w*|omarthros\w*|arthroplast\w*|kellgren\w*|"
        r"gonartros\w*|"
        r"tibiaplateau|condyl\w*|epicondyl\w*|meniscus|hand|hands|handen|h[äa]e?nde|"
        r"finger\w*|vinger\w*)\b",
        _FLAGS,
    ),
    "chest": re.compile(
        r"\b(?:lungs?|lung fields?|longen|longveld\w*|lunge|pulmo\w*|pleura\w*|pleural|"
        r"pleuravocht|mediastin\w*|hil(?:ar|um|i)|lobe[ns]?|upper lobe|lower lobe|middle lobe|"
        r"lingula\w*|bovenkwab|onderkwab|middenkwab|oberlappen|unterlappen|mittellappen|"
        r"costophrenic|hemidiaphragm\w*|diaphragm\w*|trachea|bronch\w*|atelecta\w*|"
        r"pneumothora\w*|RUL|RML|RLL|LUL|LLL|GGO|ground[- ]glass)\b|폐|흉막|흉부",
        _FLAGS,
    ),
}
TEXT_REGION_MIN_HITS = 3
# On a radiograph, the heart and the chest itself also say "chest" ("Heart size normal. Lungs
# clear." is a chest radiograph; no radiograph template covers the heart alone), and so does
# the chest radiograph's normal idiom "no active disease" (Open-i tune half: 4 reports say
# nothing else).
_REGION_TEXT_XR: dict[str, re.Pattern[str]] = {
    "chest": re.compile(
        r"\b(?:heart|hearts|cardiac|cardio\w*|cardiomediastinal|chest|thorax|thoracic|"
        r"hart\w*|herz\w*|cor|ribs?|ribben|rippen?|aort\w*|vascular\w*|vasculature|"
        r"hilum|hila|hilar|hili|mediastin\w*|active disease)\b",
        _FLAGS,
    ),
}
# Wording that gives a report's modality away when no field or exam line states it (technique
# words, not modality names: "CT recommended" in a radiograph report names another exam).
_MODALITY_TEXT: dict[str, re.Pattern[str]] = {
    "CT": re.compile(
        r"\b(?:ground[- ]glass|GGOs?|Hounsfield|HU|axial|mediastinal window|"
        r"lung window|centrilobular|tree-in-bud|crazy[- ]paving|mosaic attenuation|"
        r"septal thickening|milchglas\w*|matglas\w*|hyperdens\w*|hypodens\w*|isodens\w*|"
        r"attenuation|non-contrast)\b|조영",
        _FLAGS,
    ),
    "XR": re.compile(
        r"\b(?:views?|PA|AP|lateral|frontal|portable|"
        r"silhouette|costophrenic|hemidiaphragm\w*|cardiopulmonary|heart size|"
        r"cardiomediastinal)\b",
        _FLAGS,
    ),
    "MR": re.compile(r"\b(?:T1|T2|FLAIR|DWI|SWI|STIR|gadolinium|LGE|diffusion\w*)\b", _FLAGS),
}


def modality_family(code: str | None) -> str | None:
    """The family of a modality code ("MRI" -> "MR", "DX" -> "XR"); None when not a modality."""
    if not code:
        return None
    return MODALITY_FAMILIES.get(code.strip().upper())


def body_region(part: str | None) -> str | None:
    """The region of a body-part word ("HEAD" -> "brain"); the word itself when not a region we
    know (it still tells routing that the exam is of some other part)."""
    if not part or not part.strip():
        return None
    word = part.strip().upper()
    return BODY_REGIONS.get(word, word.lower())


_VIEWS = re.compile(r"\b(?:\d+\s+)?views?\b", _FLAGS)


def modalities_named(text: str) -> frozenset[str]:
    """The modality families an exam line names ("PET/CT" -> PT and CT); "1 view", "2 views"
    mean a radiograph only when no other modality is named ("single-view mammogram")."""
    named = frozenset(f for f, words in _MODALITY_WORDS.items() if words.search(text))
    if not named and _VIEWS.search(text):
        return frozenset({"XR"})
    return named


_DISEASE = (
    r"(?:cancer|carcinoma|carcinoom|karzinom|kanker|krebs|tumou?r|neoplasm|malignan\w*|"
    r"metasta\w*)"
)
_DISEASE_AFTER = re.compile(rf"[ \t]*-?[ \t]*(?:{_DISEASE}|ca)\b", _FLAGS)
_DISEASE_IN_WORD = re.compile(rf"\w+?{_DISEASE}\w*", _FLAGS)
"""A diagnosis named by its organ: "breast cancer", "Mamma-Ca", "borstkanker", "Mammakarzinom"."""


def _names_a_diagnosis(text: str, word: re.Match[str]) -> bool:
    """Whether a region word is the organ of a diagnosis, not the exam's region."""
    return bool(_DISEASE_IN_WORD.fullmatch(word.group(0)) or _DISEASE_AFTER.match(text, word.end()))


def regions_named(text: str) -> frozenset[str]:
    """The body regions an exam line names. A region named only inside a diagnosis ("MRI brain
    for follow-up of breast cancer", "CT thorax bij mammacarcinoom") is not the exam's region
    when the line names another region; alone ("Breast cancer staging") it is."""
    named: dict[str, bool] = {}
    for region, words in _REGION_WORDS.items():
        hits = list(words.finditer(text))
        if hits:
            named[region] = all(_names_a_diagnosis(text, hit) for hit in hits)
    exam_regions = frozenset(region for region, diagnosis in named.items() if not diagnosis)
    return exam_regions or frozenset(named)


def modality_cues(text: str) -> dict[str, int]:
    """Per modality family, how many distinct words of its wording the text uses."""
    return {
        family: len({m.group(0).lower() for m in words.finditer(text)})
        for family, words in _MODALITY_TEXT.items()
    }


def _region_counts(text: str, modality: str | None) -> dict[str, int]:
    words: dict[str, set[str]] = {
        region: {m.group(0).lower() for m in pattern.finditer(text)}
        for region, pattern in _REGION_TEXT.items()
    }
    if modality == "XR":
        for region, pattern in _REGION_TEXT_XR.items():
            words[region] |= {m.group(0).lower() for m in pattern.finditer(text)}
    return {region: len(found) for region, found in words.items()}


def region_of_text(text: str, modality: str | None = None, min_hits: int = TEXT_REGION_MIN_HITS
                   ) -> str | None:  # fmt: skip
    """The region a report's body speaks of most (at least `min_hits` distinct words, more
    than any other region); None when unclear. With `modality` XR the heart and chest words of
    a radiograph count for the chest too."""
    counts = _region_counts(text, modality)
    ranked = sorted(counts.items(), key=lambda item: -item[1])
    best, hits = ranked[0]
    if hits < min_hits or (len(ranked) > 1 and ranked[1][1] >= hits):
        return None
    return best


_RIGHT = r"(?![0-9A-Za-zÀ-ÖØ-öø-ÿ_])"


def _alternative(term: str) -> str:
    return re.escape(term[:-1]) + r"\w*" if term.endswith("*") else re.escape(term)


def _terms_regex(terms: Iterable[str]) -> re.Pattern[str] | None:
    words = sorted({t.strip().lower() for t in terms if t.strip()}, key=len, reverse=True)
    if not words:
        return None
    return re.compile(
        r"(?<!\w)(?:" + "|".join(_alternative(w) for w in words) + ")" + _RIGHT, _FLAGS
    )


_CACHE: dict[int, tuple[Template, list[tuple[str, list[re.Pattern[str]]]]]] = {}


def _variable_patterns(template: Template) -> list[tuple[str, list[re.Pattern[str]]]]:
    cached = _CACHE.get(id(template))
    if cached is not None and cached[0] is template:
        return cached[1]
    found: list[tuple[str, list[re.Pattern[str]]]] = []
    for variable in template.variables:
        terms = [w for words in variable.synonyms.values() for w in words]
        for option in variable.options:
            terms.extend(w for words in option.synonyms.values() for w in words)
        patterns = [p for p in [_terms_regex(terms)] if p is not None]
        for regexes in variable.patterns.values():
            patterns.extend(re.compile(regex, _FLAGS) for regex in regexes)
        found.append((variable.id, patterns))
    _CACHE[id(template)] = (template, found)
    return found


def variables_mentioned(template: Template, text: str) -> tuple[str, ...]:
    """The ids of the template's variables the text mentions (synonym, option or pattern)."""
    return tuple(
        variable_id
        for variable_id, patterns in _variable_patterns(template)
        if any(pattern.search(text) for pattern in patterns)
    )


def keywords_named(template: Template, text: str) -> tuple[str, ...]:
    """The template's routing keywords found in the text."""
    pattern = _terms_regex(w for words in template.applies_to.keywords.values() for w in words)
    if pattern is None:
        return ()
    return tuple(dict.fromkeys(m.group(0) for m in pattern.finditer(text)))
