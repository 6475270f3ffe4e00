"""Regenerates ``src/cultureclip/data/taxonomy/countries.csv`` (provenance script, run by hand).

The CSV is the shipped data; this script only records where it came from. It needs
packages that are *not* cultureclip dependencies, installed somewhere throwaway::

    pip install --target /tmp/countrydeps pycountry pycountry-convert country_converter
    PYTHONPATH=/tmp/countrydeps python scripts/make_countries_csv.py

Sources: the ISO 3166-1 list (pycountry: alpha-2, alpha-3, ISO and official names), the continent
(pycountry-convert, with North and South America apart), and the UN M49
sub-region and the short everyday name (the ``country_data.tsv`` table shipped in
country_converter, read as a plain TSV). Antarctica-area territories that pycountry-convert does not place get
their continent from the UN sub-region or from the small table below.
"""

from __future__ import annotations

import csv
from importlib import resources
from pathlib import Path

import pycountry
import pycountry_convert

OUTPUT = Path(__file__).resolve().parents[1] / "src/cultureclip/data/taxonomy/countries.csv"

CONTINENT_NAMES = {
    "AF": "Africa",
    "AN": "Antarctica",
    "AS": "Asia",
    "EU": "Europe",
    "NA": "North America",
    "OC": "Oceania",
    "SA": "South America",
}

# pycountry-convert has no continent for these ISO codes; placed by geography.
CONTINENT_OVERRIDES = {
    "AQ": "Antarctica",
    "BV": "Antarctica",  # Bouvet Island (UN M49 puts it in South America; it lies in the Southern Ocean)
    "GS": "Antarctica",  # South Georgia and the South Sandwich Islands
    "HM": "Antarctica",  # Heard Island and McDonald Islands
    "TF": "Antarctica",  # French Southern Territories
    "EH": "Africa",  # Western Sahara
    "SX": "North America",  # Sint Maarten
    "TL": "Asia",  # Timor-Leste
    "UM": "Oceania",  # United States Minor Outlying Islands
    "VA": "Europe",  # Holy See
    "PN": "Oceania",  # Pitcairn
}


def coco_table() -> dict[str, dict[str, str]]:
    """country_converter's rows keyed by alpha-3 (its ISO2 column holds regexes for GB, GR)."""
    table = resources.files("country_converter") / "country_data.tsv"
    with table.open(encoding="utf-8") as handle:
        return {row["ISO3"]: row for row in csv.DictReader(handle, delimiter="\t") if row["ISO3"]}


def continent(iso2: str) -> str:
    if iso2 in CONTINENT_OVERRIDES:
        return CONTINENT_OVERRIDES[iso2]
    return CONTINENT_NAMES[pycountry_convert.country_alpha2_to_continent_code(iso2)]


def main() -> None:
    coco = coco_table()
    rows = []
    for entry in pycountry.countries:
        iso_name = entry.name
        extra = coco.get(entry.alpha_3, {})
        # The short everyday name ("Russia", "Bolivia") reads better in prompts than
        # the ISO list form ("Russian Federation", "Bolivia, Plurinational State of").
        name = extra.get("name_short") or getattr(entry, "common_name", None) or iso_name
        region = extra.get("UNregion") or ("Antarctica" if entry.alpha_2 == "AQ" else "")
        if not region:
            raise SystemExit(f"no UN sub-region for {entry.alpha_2} ({name}); add it by hand")
        rows.append(
            {
                "iso2": entry.alpha_2,
                "iso3": entry.alpha_3,
                "name": name,
                "iso_name": iso_name,
                "official_name": getattr(entry, "official_name", "") or "",
                "continent": continent(entry.alpha_2),
                "region": region,
            }
        )
    rows.sort(key=lambda row: row["iso2"])
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    with OUTPUT.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {len(rows)} countries to {OUTPUT}")


if __name__ == "__main__":
    main()
