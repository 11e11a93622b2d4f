"""The HTML report in a real headless Chromium: it opens offline, every image loads, tables sort, nothing is fetched.

Needs Debian's chromium (`apt-get install -y chromium`); skipped with that reason when it is absent.
"""

import re
import shutil
import subprocess

import pytest

from dashboards.export import export_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--virtual-time-budget=5000",
]
# Appended to a copy of the page: after load, count images that decoded, resource fetches that are not data:
# URIs, and CSP violations (a blocked request); then sort the headline table by its "mean" column (index 4).
PROBE = """<script>
var violations = 0;
document.addEventListener('securitypolicyviolation', function(){ violations++; });
window.addEventListener('load', function(){
  var images = Array.from(document.images);
  var loaded = images.filter(function(i){ return i.complete && i.naturalWidth > 0; }).length;
  var fetched = performance.getEntriesByType('resource').filter(function(e){ return e.name.indexOf('data:') !== 0; });
  var table = document.querySelector('table.sortable');
  table.tHead.rows[0].cells[4].click();
  var first = table.tBodies[0].rows[0].cells[0].textContent;
  document.title = 'PROBE images=' + images.length + ' loaded=' + loaded + ' fetched=' + fetched.length +
    ' violations=' + violations + ' first=' + first;
});
</script>"""


def chromium(args: list[str], profile) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True, timeout=60
    )


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium: apt-get update && apt-get install -y chromium")
def test_html_report_opens_offline_with_every_image_in_chromium(store, tmp_path):
    uri, _ = store
    out = tmp_path / "report"
    export_report("kernels", out, uri=uri, log_artifact=False)
    page = (out / "report.html").read_text()
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", page), "the page links to the network"
    assert "Content-Security-Policy" in page and page.count("data:image/png;base64,") >= 6
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", PROBE + "</body>"))
    dom = chromium(["--dump-dom", probe.as_uri()], tmp_path / "profile-1")
    title = re.search(r"<title>(PROBE [^<]*)</title>", dom.stdout)
    assert title, f"probe did not run: {dom.stderr[-2000:]}"
    fields = dict(item.split("=", 1) for item in title.group(1).split()[1:])
    assert int(fields["images"]) >= 6 and fields["loaded"] == fields["images"]
    assert fields["fetched"] == "0" and fields["violations"] == "0"
    assert fields["first"] == "mta_full"  # lowest mean perplexity first after sorting by mean
    shot = tmp_path / "first_screen.png"
    chromium(["--window-size=1280,900", f"--screenshot={shot}", (out / "report.html").as_uri()], tmp_path / "profile-2")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium: apt-get update && apt-get install -y chromium")
def test_headline_table_fits_an_800_px_window(store, tmp_path):
    uri, _ = store
    out = tmp_path / "report"
    export_report("kernels", out, uri=uri, log_artifact=False)
    probe = """<script>window.addEventListener('load', function(){
      var t = document.querySelector('table.sortable');
      document.title = 'WIDTH table=' + t.scrollWidth + ' page=' + document.documentElement.scrollWidth +
        ' view=' + document.documentElement.clientWidth; });</script>"""
    page = tmp_path / "width.html"
    page.write_text((out / "report.html").read_text().replace("</body>", probe + "</body>"))
    dom = chromium(["--window-size=800,900", "--dump-dom", page.as_uri()], tmp_path / "profile-w")
    found = re.search(r"WIDTH table=(\d+) page=(\d+) view=(\d+)", dom.stdout)
    assert found, dom.stderr[-2000:]
    table, whole, view = map(int, found.groups())
    assert table <= view and whole <= view, found.group(0)
