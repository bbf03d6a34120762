"""Independent judges of Airlock's evidence (no Airlock code): validates the SPDX 2.3 SBOM with
spdx-tools, the CycloneDX 1.6 SBOM with cyclonedx-python-lib's schema validator, and the DSSE
envelope's ed25519 signatures over the pre-authentication encoding with `cryptography`, using
minisign public key files; checks the in-toto statement's subjects against the files beside it.

usage: evidence.py IMAGE_DIR PUBKEY_FILE...   (exit 0 when everything holds; one line per check)
"""
import base64
import hashlib
import json
import os
import sys

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from spdx_tools.spdx.parser.parse_anything import parse_file
from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document


def fail(msg):
    print("FAIL", msg)
    sys.exit(1)


def main():
    d = sys.argv[1]
    doc = parse_file(os.path.join(d, "sbom.spdx.json"))
    errors = validate_full_spdx_document(doc)
    if errors:
        fail("SPDX: " + "; ".join(e.validation_message for e in errors[:5]))
    print(f"ok spdx-tools: SPDX 2.3 valid, {len(doc.packages)} packages")

    with open(os.path.join(d, "sbom.cdx.json")) as f:
        err = JsonStrictValidator(SchemaVersion.V1_6).validate_str(f.read())
    if err:
        fail(f"CycloneDX: {err}")
    print("ok cyclonedx-python-lib: CycloneDX 1.6 valid")

    keys = {}
    for p in sys.argv[2:]:
        raw = base64.b64decode(open(p).read().splitlines()[1])
        keyid = raw[2:10][::-1].hex().upper()  # minisign ids are little-endian numbers
        keys[keyid] = Ed25519PublicKey.from_public_bytes(raw[10:42])
    env = json.load(open(os.path.join(d, "provenance.intoto.json")))
    payload = base64.b64decode(env["payload"])
    ptype = env["payloadType"].encode()
    pae = b"DSSEv1 %d %s %d %s" % (len(ptype), ptype, len(payload), payload)
    good = 0
    for s in env["signatures"]:
        k = keys.get(s["keyid"])
        if k is None:
            fail(f"DSSE: signature by unknown key {s['keyid']}")
        k.verify(base64.b64decode(s["sig"]), pae)  # raises on a bad signature
        good += 1
    if good == 0:
        fail("DSSE: no signatures")
    print(f"ok cryptography: {good} DSSE ed25519 signature(s) verify over the PAE")

    st = json.loads(payload)
    if st["_type"] != "https://in-toto.io/Statement/v1" or st["predicateType"] != "https://slsa.dev/provenance/v1":
        fail("not an in-toto Statement v1 with a SLSA Provenance v1 predicate")
    for sub in st["subject"]:
        h = hashlib.sha256()
        with open(os.path.join(d, sub["name"]), "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        if h.hexdigest() != sub["digest"]["sha256"]:
            fail(f"subject {sub['name']} differs")
    deps = st["predicate"]["buildDefinition"]["resolvedDependencies"]
    print(f"ok in-toto statement: {len(st['subject'])} subjects match, {len(deps)} resolved dependencies")


main()
