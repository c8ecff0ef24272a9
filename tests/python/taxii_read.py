"""Reads a certex TAXII 2.1 server with the OASIS `taxii2-client`, as one
team (mutual TLS), and prints what it saw as one JSON document.

Usage: taxii_read.py DISCOVERY_URL CA CERT KEY PER_REQUEST [PROBE_ID ...]

For every collection: its properties, every object (paged with `next`,
PER_REQUEST objects a request), the manifest (paged too), the versions of
every task, and the objects added after the middle entry of the manifest.
For each PROBE_ID: the HTTP status of GET objects/ID/ and .../versions/ in
every collection (404 when the team may not read it).
"""

import json
import sys

from taxii2client.exceptions import TAXIIServiceException
from taxii2client.v21 import Server, as_pages


def status_of(call):
    try:
        call()
        return 200
    except TAXIIServiceException as e:
        # taxii2-client wraps HTTP errors: the status is in the message.
        text = str(e)
        for code in (400, 401, 403, 404, 406):
            if str(code) in text:
                return code
        return text
    except Exception as e:  # requests.HTTPError and friends
        resp = getattr(e, "response", None)
        return resp.status_code if resp is not None else repr(e)


def main():
    url, ca, cert, key, per = sys.argv[1:6]
    probes = sys.argv[6:]
    per = int(per)
    server = Server(url, verify=ca, cert=(cert, key))
    out = {"title": server.title, "collections": []}
    for root in server.api_roots:
        for c in root.collections:
            objects, pages = [], 0
            for env in as_pages(c.get_objects, per_request=per):
                pages += 1
                objects.extend(env.get("objects", []))
            manifest = []
            for env in as_pages(c.get_manifest, per_request=per):
                manifest.extend(env.get("objects", []))
            all_versions = []
            for env in as_pages(c.get_objects, per_request=per, version="all"):
                all_versions.extend(env.get("objects", []))
            versions = {}
            for o in all_versions:
                if o["type"] == "task" and o["id"] not in versions:
                    versions[o["id"]] = c.object_versions(o["id"]).get("versions", [])
            after, added_after = None, []
            if len(manifest) >= 2:
                after = manifest[len(manifest) // 2]["date_added"]
                for env in as_pages(c.get_objects, per_request=per, added_after=after):
                    added_after.extend(env.get("objects", []))
            probe = {}
            for pid in probes:
                probe[pid] = {
                    "object": status_of(lambda: c.get_object(pid)),
                    "versions": status_of(lambda: c.object_versions(pid)),
                }
            out["collections"].append({
                "id": c.id,
                "title": c.title,
                "can_read": c.can_read,
                "can_write": c.can_write,
                "media_types": c.media_types,
                "objects": objects,
                "pages": pages,
                "manifest": manifest,
                "all_versions": all_versions,
                "task_versions": versions,
                "after": after,
                "added_after": added_after,
                "probe": probe,
            })
    # Outside the client's happy path: another media type, and a write.
    import requests

    raw = dict(verify=ca, cert=(cert, key))
    out["html_accept_status"] = requests.get(url, headers={"Accept": "text/html"}, **raw).status_code
    first = out["collections"][0]["id"] if out["collections"] else "none"
    post = requests.post(
        url.replace("/taxii2/", f"/certex/collections/{first}/objects/"),
        headers={"Accept": "application/taxii+json;version=2.1",
                 "Content-Type": "application/taxii+json;version=2.1"},
        data=json.dumps({"objects": []}),
        **raw,
    )
    out["post_status"] = post.status_code
    out["post_body"] = post.json()
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
