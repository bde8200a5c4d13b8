"""HL7v2, read and written in one place: ER7 tokenising with the message's own encoding
characters (`er7`), the MSH header (`msh`, read once), ORU^R01 in (`oru_in`: the checks before
the ACK and the full parse share one list), ORU^R01 out (`oru_out`) and acknowledgements (`ack`:
built and classified).
"""
