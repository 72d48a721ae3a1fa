"""Deterministic generation of realistic Plex metadata.

Every value is derived from ``(seed, ratingKey)`` with its own ``random.Random``, so an item can be
generated lazily, in any order, and always comes out identical: the library keeps only a small
skeleton per item in memory and builds full metadata on demand.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

BASE_TS = 1_577_836_800  # 2020-01-01T00:00:00Z; generated addedAt/updatedAt lie after it
SPAN_TS = 4 * 365 * 86400

# Tag type numbers as Plex uses them in /library/tags?type=N and in tagType attributes.
TAG_GENRE = 1
TAG_COLLECTION = 2
TAG_DIRECTOR = 4
TAG_WRITER = 5
TAG_ROLE = 6
TAG_COUNTRY = 8
TAG_LABEL = 11
TAG_NETWORK = 319

_ADJ = [
    "Silent",
    "Crimson",
    "Last",
    "Hidden",
    "Broken",
    "Golden",
    "Electric",
    "Forgotten",
    "Wild",
    "Frozen",
    "Secret",
    "Lonely",
    "Burning",
    "Distant",
    "Midnight",
    "Velvet",
    "Iron",
    "Paper",
    "Hollow",
    "Bright",
    "Café",
    "Señor",
    "Über",
    "Déjà",
    "Naïve",
    "Ørsted",
    "Żółty",
    "Ñandú",
]
_NOUN = [
    "River",
    "Empire",
    "Garden",
    "Signal",
    "Harbor",
    "Horizon",
    "Kingdom",
    "Machine",
    "Orchard",
    "Voyage",
    "Letter",
    "Mirror",
    "Station",
    "Winter",
    "Circus",
    "Lantern",
    "Archive",
    "Frontier",
    "Island",
    "Promise",
    "東京物語",
    "夜明け",
    "서울의 봄",
    "Мечта",
    "Αγάπη",
    "Crème Brûlée",
]
_EMOJI = ["🚀", "🎬", "🌊", "🔥", "✨", "🐉"]
_FIRST = [
    "Anna",
    "Björn",
    "Chloé",
    "Dmitri",
    "Élodie",
    "François",
    "Grace",
    "Hiroshi",
    "Inés",
    "José",
    "Kwame",
    "Łukasz",
    "Mei",
    "Nikolaj",
    "Oluwaseun",
    "Priya",
    "Quentin",
    "Renée",
    "Søren",
    "Tomás",
    "Yuki",
    "Zoë",
    "Ahmed",
    "Bea",
    "Carlos",
    "Dana",
    "Emil",
    "Fatima",
    "Gustav",
    "Hana",
]
_LAST = [
    "Andersson",
    "Bergström",
    "Castillo",
    "Dubois",
    "Eriksen",
    "Fernández",
    "García",
    "Hoffmann",
    "Ivanova",
    "Jensen",
    "Kowalski",
    "Lefèvre",
    "Müller",
    "Nakamura",
    "O'Brien",
    "Petrović",
    "Quinn",
    "Rossi",
    "Sánchez",
    "Tanaka",
    "Umarov",
    "Varga",
    "Wójcik",
    "Xu",
    "Yılmaz",  # noqa: RUF001 - deliberate non-ASCII name
    "Zhang",
    "王",
    "佐藤",
    "Kim",
    "Novák",
]
_CHARACTERS = ["Detective", "Captain", "Dr.", "Agent", "Professor", "Mother", "Young", "Old", "The"]
GENRES = [
    "Action",
    "Adventure",
    "Animation",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Family",
    "Fantasy",
    "History",
    "Horror",
    "Music",
    "Mystery",
    "Romance",
    "Science Fiction",
    "Thriller",
    "War",
    "Western",
]
COUNTRIES = [
    "United States of America",
    "United Kingdom",
    "France",
    "Germany",
    "Japan",
    "South Korea",
    "Spain",
    "Italy",
    "Canada",
    "Brazil",
    "India",
    "Denmark",
    "Côte d'Ivoire",
    "México",
]
LABELS = ["4K", "Favourite", "Kids", "Watchlist", "Criterion", "Rewatch"]
STUDIOS = [
    "Paramount",
    "Warner Bros.",
    "Studio Ghibli",
    "A24",
    "Gaumont",
    "Pathé",
    "Toho",
    "Universal Pictures",
    "Constantin Film",
    "Nordisk Film",
    "20th Century Studios",
    "Lionsgate",
]
NETWORKS = [
    "HBO",
    "BBC One",
    "NHK",
    "Canal+",
    "ZDF",
    "Netflix",
    "AMC",
    "FX",
    "Arte",
    "TV 2",
    "Showtime",
    "Hulu",
]
_RATINGS_MOVIE = ["G", "PG", "PG-13", "R", "NC-17", "NR", "de/12", "gb/15"]
_RATINGS_TV = ["TV-Y", "TV-G", "TV-PG", "TV-14", "TV-MA"]
_WORDS = [
    "a",
    "young",
    "woman",
    "discovers",
    "an",
    "old",
    "secret",
    "that",
    "changes",
    "everything",
    "she",
    "knows",
    "about",
    "her",
    "family",
    "while",
    "a",
    "small",
    "town",
    "faces",
    "the",
    "storm",
    "of",
    "the",
    "century",
    "and",
    "two",
    "rivals",
    "must",
    "work",
    "together",
    "to",
    "survive",
    "the",
    "night",
    "before",
    "the",
    "truth",
    "comes",
    "out",
    "in",
    "a",
    "journey",
    "across",
    "the",
    "sea",
    "where",
    "nothing",
    "is",
    "what",
    "it",
    "seems",
]
_LANGS = [
    ("English", "eng", "en"),
    ("Français", "fra", "fr"),
    ("Deutsch", "deu", "de"),
    ("Español", "spa", "es"),
    ("日本語", "jpn", "ja"),
    ("한국어", "kor", "ko"),
    ("Italiano", "ita", "it"),
    ("Dansk", "dan", "da"),
]
_VIDEO_FORMATS = [
    # (videoResolution, width, height, videoCodec, videoProfile, bitrate kbps)
    ("1080", 1920, 1080, "h264", "high", 8000),
    ("4k", 3840, 2160, "hevc", "main 10", 25000),
    ("720", 1280, 720, "h264", "high", 4000),
    ("sd", 720, 480, "mpeg2video", "main", 2000),
]
_AUDIO = [
    ("aac", 2, "stereo", "lc"),
    ("ac3", 6, "5.1(side)", None),
    ("eac3", 6, "5.1", None),
    ("truehd", 8, "7.1", None),
    ("dca", 6, "5.1", "dts"),
]
_CONTAINERS = ["mkv", "mkv", "mkv", "mp4", "avi"]


def person_id(index: int) -> int:
    """Tag ids for people are stable across items so a catalog can deduplicate them."""
    return 10_000 + index


def vocab_id(base: int, index: int) -> int:
    return base + index


def person_name(index: int) -> str:
    return f"{_FIRST[index % len(_FIRST)]} {_LAST[(index // len(_FIRST)) % len(_LAST)]}"


N_PEOPLE = len(_FIRST) * len(_LAST)
GENRE_BASE, COUNTRY_BASE, LABEL_BASE, NETWORK_BASE = 100, 300, 400, 500


def _rng(seed: int, salt: str, key: int) -> random.Random:
    return random.Random(f"{seed}/{salt}/{key}")


@dataclass(slots=True)
class Skeleton:
    """The few generated values the library needs up front (sorting, filtering, paths)."""

    title: str
    year: int | None
    network: int | None  # index into NETWORKS, shows only


def make_title(rng: random.Random, allow_emoji: bool = True) -> str:
    roll = rng.random()
    adj, noun = rng.choice(_ADJ), rng.choice(_NOUN)
    if roll < 0.25:
        title = f"The {adj} {noun}"
    elif roll < 0.35:
        title = f"A {noun} of {rng.choice(_NOUN)}"
    elif roll < 0.45:
        title = f"{noun}: {adj} {rng.choice(_NOUN)}"
    else:
        title = f"{adj} {noun}"
    if rng.random() < 0.08:
        title += f" {rng.randint(2, 4)}"
    if allow_emoji and rng.random() < 0.03:
        title += f" {rng.choice(_EMOJI)}"
    return title


def skeleton(seed: int, kind: str, rating_key: int) -> Skeleton:
    rng = _rng(seed, "skel", rating_key)
    if kind == "other":
        stamp = 20150101 + rng.randint(0, 9) * 10000 + rng.randint(0, 11) * 100 + rng.randint(0, 27)
        names = [
            f"VID_{stamp}_{rng.randint(0, 235959):06d}",
            f"Birthday party {rng.randint(1, 40)} 🎂",
            f"Vacances à {rng.choice(['Nîmes', 'Besançon', 'Zürich'])}",
            f"Holiday clip {rating_key}",
        ]
        return Skeleton(rng.choice(names), None if rng.random() < 0.5 else 2015 + rng.randint(0, 9), None)
    title = make_title(rng)
    year = 1950 + rng.randint(0, 74) if rng.random() > 0.04 else None
    network = rng.randrange(len(NETWORKS)) if kind == "show" and rng.random() > 0.1 else None
    return Skeleton(title, year, network)


def episode_title(seed: int, rating_key: int, index: int) -> str:
    rng = _rng(seed, "skel", rating_key)
    return make_title(rng) if rng.random() < 0.9 else f"Episode {index}"


def sort_title(title: str) -> str:
    for article in ("The ", "A ", "An "):
        if title.startswith(article):
            return title[len(article) :]
    return title


def _sentence(rng: random.Random, n: int) -> str:
    words = [rng.choice(_WORDS) for _ in range(n)]
    return " ".join(words).capitalize() + "."


def _summary(rng: random.Random) -> str:
    text = " ".join(_sentence(rng, rng.randint(8, 18)) for _ in range(rng.randint(1, 3)))
    if rng.random() < 0.1:
        text += "\nNew line — and “quotes” & <brackets>."
    return text


def _tag(base: int, index: int, name: str, filt: str) -> dict[str, Any]:
    tag_id = vocab_id(base, index)
    return {"id": tag_id, "filter": f"{filt}={tag_id}", "tag": name}


def _people(rng: random.Random, n: int, filt: str, with_roles: bool) -> list[dict[str, Any]]:
    picks = rng.sample(range(N_PEOPLE), n)
    out: list[dict[str, Any]] = []
    for p in picks:
        pid = person_id(p)
        d: dict[str, Any] = {"id": pid, "filter": f"{filt}={pid}", "tag": person_name(p), "tagKey": f"{pid:024x}"}
        if with_roles:
            d["role"] = f"{rng.choice(_CHARACTERS)} {rng.choice(_FIRST)}"
        if rng.random() < 0.7:
            d["thumb"] = f"https://metadata-static.plex.tv/people/{pid:x}.jpg"
        out.append(d)
    return out


def _sample_tags(rng: random.Random, vocab: list[str], base: int, lo: int, hi: int, filt: str) -> list[Any]:
    idx = rng.sample(range(len(vocab)), rng.randint(lo, hi))
    return [_tag(base, i, vocab[i], filt) for i in idx]


def _guids(rng: random.Random, tvdb: bool, tmdb: bool = True, imdb: bool = True) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if imdb and rng.random() < 0.9:
        out.append({"id": f"imdb://tt{rng.randint(100000, 9999999):07d}"})
    if tmdb:
        out.append({"id": f"tmdb://{rng.randint(1, 999999)}"})
    if tvdb:
        out.append({"id": f"tvdb://{rng.randint(1, 9999999)}"})
    return out


def _streams(rng: random.Random, part_id: int, fmt: tuple[str, int, int, str, str, int]) -> list[Any]:
    res, width, height, vcodec, vprofile, bitrate = fmt
    sid = part_id * 16
    streams: list[dict[str, Any]] = [
        {
            "id": sid,
            "key": f"/library/streams/{sid}",
            "streamType": 1,
            "default": True,
            "codec": vcodec,
            "index": 0,
            "bitrate": bitrate,
            "height": height,
            "width": width,
            "frameRate": 23.976,
            "profile": vprofile,
            "level": 41,
            "displayTitle": f"{res.upper() if res != 'sd' else 'SD'} ({vcodec.upper()})",
            "extendedDisplayTitle": f"{res} ({vcodec.upper()})",
        }
    ]
    n_audio = rng.randint(1, 3)
    langs = rng.sample(_LANGS, n_audio + 3)
    for i in range(n_audio):
        codec, channels, layout, aprof = rng.choice(_AUDIO)
        name, code3, tag = langs[i]
        sid += 1
        a: dict[str, Any] = {
            "id": sid,
            "key": f"/library/streams/{sid}",
            "streamType": 2,
            "codec": codec,
            "index": i + 1,
            "channels": channels,
            "audioChannelLayout": layout,
            "samplingRate": 48000,
            "bitrate": 640 if channels > 2 else 192,
            "language": name,
            "languageCode": code3,
            "languageTag": tag,
            "displayTitle": f"{name} ({codec.upper()} {layout})",
            "extendedDisplayTitle": f"{name} ({codec.upper()} {layout})",
        }
        if i == 0:
            a["default"] = True
            a["selected"] = True
        if aprof:
            a["profile"] = aprof
        if rng.random() < 0.3:
            a["title"] = rng.choice(["Surround", "Commentary", "Director's commentary", "Stéréo"])
        streams.append(a)
    for j in range(rng.randint(0, 4)):
        name, code3, tag = langs[j % len(langs)]
        sid += 1
        forced = rng.random() < 0.15
        s: dict[str, Any] = {
            "id": sid,
            "key": f"/library/streams/{sid}",
            "streamType": 3,
            "codec": rng.choice(["srt", "ass", "pgs"]),
            "index": n_audio + 1 + j,
            "language": name,
            "languageCode": code3,
            "languageTag": tag,
            "displayTitle": f"{name} ({'Forced' if forced else 'SRT'})",
            "extendedDisplayTitle": name,
        }
        if forced:
            s["forced"] = True
        if j == 0 and rng.random() < 0.3:
            s["default"] = True
        if rng.random() < 0.2:
            s["title"] = "SDH"
            s["hearingImpaired"] = True
        streams.append(s)
    return streams


def safe_path(title: str) -> str:
    return title.replace("/", "-").replace(":", " -").replace("?", "")


def make_media(
    rng: random.Random, rating_key: int, duration: int, base_path: str, n_media: int, multi_part: float
) -> list[dict[str, Any]]:
    """Media versions > Parts > Streams; ids derive from the ratingKey so they are stable and unique."""
    media: list[dict[str, Any]] = []
    for m in range(n_media):
        fmt = _VIDEO_FORMATS[m % len(_VIDEO_FORMATS)] if n_media > 1 else rng.choice(_VIDEO_FORMATS)
        res, width, height, vcodec, vprofile, bitrate = fmt
        container = rng.choice(_CONTAINERS)
        acodec, channels, _layout, _ap = rng.choice(_AUDIO)
        media_id = rating_key * 8 + m
        n_parts = 2 if rng.random() < multi_part else 1
        parts: list[dict[str, Any]] = []
        for p in range(n_parts):
            part_id = media_id * 4 + p
            suffix = f" - {res}" if n_media > 1 else ""
            suffix += f" - pt{p + 1}" if n_parts > 1 else ""
            file = f"{base_path}{suffix}.{container}"
            part: dict[str, Any] = {
                "id": part_id,
                "key": f"/library/parts/{part_id}/{BASE_TS}/file.{container}",
                "duration": duration // n_parts,
                "file": file,
                "size": rng.randint(200, 8000) * 1_048_576 // n_parts,
                "container": container,
                "videoProfile": vprofile,
            }
            if rng.random() < 0.5:
                part["indexes"] = "sd"
            if container == "mp4":
                part["has64bitOffsets"] = False
                part["optimizedForStreaming"] = rng.random() < 0.5
            part["Stream"] = _streams(rng, part_id, fmt)
            parts.append(part)
        md: dict[str, Any] = {
            "id": media_id,
            "duration": duration,
            "bitrate": bitrate + 640,
            "width": width,
            "height": height,
            "aspectRatio": round(width / height, 2),
            "audioChannels": channels,
            "audioCodec": acodec,
            "videoCodec": vcodec,
            "videoResolution": res,
            "container": container,
            "videoFrameRate": "24p",
            "videoProfile": vprofile,
        }
        if rng.random() < 0.2:
            md["optimizedForStreaming"] = False
        md["Part"] = parts
        media.append(md)
    return media


def make_chapters(rng: random.Random, rating_key: int, duration: int) -> list[dict[str, Any]]:
    n = rng.choice([0, 0, 4, 6, 8, 12])
    if n == 0:
        return []
    step = duration // n
    return [
        {
            "id": rating_key * 16 + i,
            "filter": f"thumb={rating_key * 16 + i}",
            "index": i + 1,
            "startTimeOffset": i * step,
            "endTimeOffset": (i + 1) * step,
            "tag": f"Chapter {i + 1}",
        }
        for i in range(n)
    ]


def _date(rng: random.Random, year: int | None) -> str | None:
    if year is None:
        return None
    return f"{year:04d}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"


def _put(d: dict[str, Any], key: str, value: Any, prob: float, rng: random.Random) -> None:
    """Optional attributes are absent (not empty) when Plex has no value, as real servers do."""
    if value is not None and rng.random() < prob:
        d[key] = value


def movie_content(seed: int, rating_key: int, sk: Skeleton, section_path: str) -> dict[str, Any]:
    rng = _rng(seed, "content", rating_key)
    d: dict[str, Any] = {"guid": f"plex://movie/{rng.getrandbits(96):024x}", "title": sk.title}
    st = sort_title(sk.title)
    if st != sk.title:
        d["titleSort"] = st
    _put(d, "originalTitle", make_title(rng, allow_emoji=False), 0.2, rng)
    _put(d, "studio", rng.choice(STUDIOS), 0.85, rng)
    _put(d, "contentRating", rng.choice(_RATINGS_MOVIE), 0.9, rng)
    _put(d, "summary", _summary(rng), 0.95, rng)
    _put(d, "rating", round(rng.uniform(2, 10), 1), 0.7, rng)
    _put(d, "audienceRating", round(rng.uniform(2, 10), 1), 0.7, rng)
    if sk.year is not None:
        d["year"] = sk.year
    _put(d, "tagline", _sentence(rng, rng.randint(4, 9)), 0.6, rng)
    duration = rng.randint(75, 190) * 60_000 + rng.randint(0, 59_999)
    d["duration"] = duration
    _put(d, "originallyAvailableAt", _date(rng, sk.year), 1.0, rng)
    n_media = 2 if rng.random() < 0.15 else 1
    name = safe_path(f"{sk.title} ({sk.year})" if sk.year else sk.title)
    d["Media"] = make_media(rng, rating_key, duration, f"{section_path}/{name}/{name}", n_media, 0.1)
    d["Genre"] = _sample_tags(rng, GENRES, GENRE_BASE, 1, 4, "genre")
    d["Country"] = _sample_tags(rng, COUNTRIES, COUNTRY_BASE, 0, 2, "country")
    d["Label"] = _sample_tags(rng, LABELS, LABEL_BASE, 0, 2, "label")
    d["Director"] = _people(rng, rng.randint(1, 2), "director", False)
    d["Writer"] = _people(rng, rng.randint(1, 3), "writer", False)
    d["Role"] = _people(rng, rng.randint(3, 15), "actor", True)
    d["Guid"] = _guids(rng, tvdb=rng.random() < 0.2)
    d["Chapter"] = make_chapters(rng, rating_key, duration)
    d["_art"] = rng.random() < 0.9
    return d


def other_content(seed: int, rating_key: int, sk: Skeleton, section_path: str) -> dict[str, Any]:
    rng = _rng(seed, "content", rating_key)
    d: dict[str, Any] = {"guid": f"local://{rating_key}", "title": sk.title}
    if sk.year is not None:
        d["year"] = sk.year
    duration = rng.randint(1, 40) * 60_000 + rng.randint(0, 59_999)
    d["duration"] = duration
    d["Media"] = make_media(rng, rating_key, duration, f"{section_path}/{safe_path(sk.title)}", 1, 0.0)
    d["Chapter"] = []
    d["_art"] = False
    return d


def show_content(seed: int, rating_key: int, sk: Skeleton) -> dict[str, Any]:
    rng = _rng(seed, "content", rating_key)
    d: dict[str, Any] = {"guid": f"plex://show/{rng.getrandbits(96):024x}", "title": sk.title}
    st = sort_title(sk.title)
    if st != sk.title:
        d["titleSort"] = st
    _put(d, "originalTitle", make_title(rng, allow_emoji=False), 0.15, rng)
    _put(d, "studio", rng.choice(STUDIOS), 0.7, rng)
    _put(d, "contentRating", rng.choice(_RATINGS_TV), 0.9, rng)
    _put(d, "summary", _summary(rng), 0.95, rng)
    _put(d, "rating", round(rng.uniform(2, 10), 1), 0.6, rng)
    _put(d, "audienceRating", round(rng.uniform(2, 10), 1), 0.6, rng)
    if sk.year is not None:
        d["year"] = sk.year
    _put(d, "tagline", _sentence(rng, rng.randint(4, 9)), 0.3, rng)
    d["duration"] = rng.choice([22, 30, 45, 60]) * 60_000
    _put(d, "originallyAvailableAt", _date(rng, sk.year), 1.0, rng)
    d["Genre"] = _sample_tags(rng, GENRES, GENRE_BASE, 1, 3, "genre")
    d["Country"] = _sample_tags(rng, COUNTRIES, COUNTRY_BASE, 0, 1, "country")
    d["Label"] = _sample_tags(rng, LABELS, LABEL_BASE, 0, 1, "label")
    d["Role"] = _people(rng, rng.randint(3, 12), "actor", True)
    d["Guid"] = _guids(rng, tvdb=True)
    if sk.network is not None:
        d["Network"] = [_tag(NETWORK_BASE, sk.network, NETWORKS[sk.network], "network")]
    d["_art"] = rng.random() < 0.9
    d["_banner"] = rng.random() < 0.7
    return d


def season_content(seed: int, rating_key: int, index: int) -> dict[str, Any]:
    rng = _rng(seed, "content", rating_key)
    d: dict[str, Any] = {
        "guid": f"plex://season/{rng.getrandbits(96):024x}",
        "title": "Specials" if index == 0 else f"Season {index}",
    }
    _put(d, "summary", _summary(rng), 0.3, rng)
    d["Guid"] = _guids(rng, tvdb=True, imdb=False)
    d["_art"] = rng.random() < 0.8
    return d


def episode_content(
    seed: int, rating_key: int, show_title: str, season_index: int, index: int, section_path: str
) -> dict[str, Any]:
    rng = _rng(seed, "content", rating_key)
    title = episode_title(seed, rating_key, index)
    d: dict[str, Any] = {"guid": f"plex://episode/{rng.getrandbits(96):024x}", "title": title}
    _put(d, "contentRating", rng.choice(_RATINGS_TV), 0.8, rng)
    _put(d, "summary", _summary(rng), 0.85, rng)
    _put(d, "rating", round(rng.uniform(2, 10), 1), 0.5, rng)
    year = 1990 + rng.randint(0, 34)
    if rng.random() < 0.95:
        d["year"] = year
        d["originallyAvailableAt"] = _date(rng, year)
    duration = rng.randint(20, 62) * 60_000 + rng.randint(0, 59_999)
    d["duration"] = duration
    show = safe_path(show_title)
    base = f"{section_path}/{show}/Season {season_index:02d}/{show} - S{season_index:02d}E{index:02d}"
    d["Media"] = make_media(rng, rating_key, duration, f"{base} - {safe_path(title)}", 1, 0.03)
    d["Director"] = _people(rng, rng.randint(0, 1), "director", False)
    d["Writer"] = _people(rng, rng.randint(0, 2), "writer", False)
    d["Role"] = _people(rng, rng.randint(0, 3), "actor", True)
    d["Guid"] = _guids(rng, tvdb=True, tmdb=rng.random() < 0.8)
    d["Chapter"] = make_chapters(rng, rating_key, duration)
    d["_art"] = False
    return d


def collection_content(seed: int, rating_key: int, subtype: str) -> dict[str, Any]:
    rng = _rng(seed, "content", rating_key)
    title = f"{rng.choice(_ADJ)} {rng.choice(_NOUN)} Collection"
    d: dict[str, Any] = {"guid": f"collection://{rng.getrandbits(128):032x}", "title": title, "subtype": subtype}
    _put(d, "summary", _summary(rng), 0.5, rng)
    d["smart"] = rng.random() < 0.2
    d["_art"] = rng.random() < 0.5
    return d


def added_at(seed: int, rating_key: int) -> int:
    return BASE_TS + _rng(seed, "added", rating_key).randrange(SPAN_TS)


def pick_members(seed: int, rating_key: int, pool: list[int], lo: int, hi: int) -> list[int]:
    rng = _rng(seed, "members", rating_key)
    if not pool:
        return []
    return sorted(rng.sample(pool, min(len(pool), rng.randint(lo, hi))))
