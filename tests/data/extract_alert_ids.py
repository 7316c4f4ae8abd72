"""How real_alert_ids.csv and real_prv_ids.csv were made (run once by a developer; not used by tests).

They hold the identifiers of every real ZTF alert packet in the project's reference data (shared/data,
packets from ZwickyTransientFacility/ztf-avro-alert, fink-broker and fink-alert-schemas, schemas 1.x-3.5)
and of their prv_candidates, so that the id arithmetic in ztfsds.products can be tested against the real
system without shipping the packets or needing fastavro.

    python tests/data/extract_alert_ids.py ../shared/data tests/data
"""

import csv
import glob
import os
import sys

import fastavro

CAND = ["source", "schemavsn", "objectId", "candid", "jd", "pid", "nid", "rcid", "field", "fid",
        "isdiffpos", "tblid", "programid", "rfid"]
PRV = ["pid", "jd", "nid", "rcid", "field", "fid", "candid", "isdiffpos"]


def main(src, dst):
    cands, prvs, seen = [], set(), set()
    for path in sorted(glob.glob(os.path.join(src, "**", "*.avro"), recursive=True)):
        with open(path, "rb") as fh:
            for rec in fastavro.reader(fh):
                c = rec["candidate"]
                if c["candid"] in seen:
                    continue
                seen.add(c["candid"])
                row = {k: c.get(k) for k in CAND}
                row.update(source=os.path.relpath(path, src), schemavsn=rec.get("schemavsn"),
                           objectId=rec["objectId"])
                cands.append(row)
                for p in rec.get("prv_candidates") or []:
                    prvs.add(tuple(p.get(k) for k in PRV))
    with open(os.path.join(dst, "real_alert_ids.csv"), "w", newline="") as fh:
        w = csv.DictWriter(fh, CAND)
        w.writeheader()
        w.writerows(cands)
    with open(os.path.join(dst, "real_prv_ids.csv"), "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(PRV)
        w.writerows(sorted(prvs, key=lambda r: (r[0], r[1])))


if __name__ == "__main__":
    main(*sys.argv[1:3])
