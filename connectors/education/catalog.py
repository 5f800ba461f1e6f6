"""The simulated province's schools and school calendar: levels, sizes, names, days off."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import date, timedelta
from enum import StrEnum

import holidays
from vietnam_provinces import ProvinceCode, Ward


class Level(StrEnum):
    """School levels as the education department's API names them (cấp học)."""

    PRESCHOOL = "mam_non"  # mầm non: crèche and kindergarten, ages 1–5
    PRIMARY = "tieu_hoc"  # tiểu học: grades 1–5
    LOWER_SECONDARY = "thcs"  # trung học cơ sở: grades 6–9
    UPPER_SECONDARY = "thpt"  # trung học phổ thông: grades 10–12


LEVEL_LABELS = {
    Level.PRESCHOOL: "Mầm non",
    Level.PRIMARY: "Tiểu học",
    Level.LOWER_SECONDARY: "THCS",
    Level.UPPER_SECONDARY: "THPT",
}
"""How a level is written in the CSV exports' `cap_hoc` column."""


@dataclass(frozen=True, slots=True)
class LevelProfile:
    """Typical size, staffing and attendance of one level's schools."""

    digit: int  # the level's digit in the school code
    prefix: str  # "Trường Tiểu học"
    enrolled: tuple[int, int]  # range for a rural school; urban schools are 1.4× larger
    class_size: float
    teachers_per_class: float
    attendance: tuple[float, float]  # range of a school's usual attendance rate
    saturday_share: float  # share of schools teaching on Saturday
    outbreak_sensitivity: float  # how hard hand-foot-mouth disease and flu hit this level
    per_ward: tuple[int, int]  # schools per phường (urban ward): min, max
    per_commune: tuple[int, int]  # schools per xã (rural commune): min, max


PROFILES: dict[Level, LevelProfile] = {
    Level.PRESCHOOL: LevelProfile(
        1, "Trường Mầm non", (140, 380), 26, 2.0, (0.91, 0.955), 0.0, 1.0, (2, 3), (1, 2)
    ),
    Level.PRIMARY: LevelProfile(
        2, "Trường Tiểu học", (380, 1100), 34, 1.5, (0.965, 0.985), 0.0, 0.8, (2, 3), (1, 2)
    ),
    Level.LOWER_SECONDARY: LevelProfile(
        3, "Trường THCS", (450, 1200), 40, 1.9, (0.955, 0.978), 0.3, 0.5, (1, 2), (1, 1)
    ),
    Level.UPPER_SECONDARY: LevelProfile(
        4, "Trường THPT", (800, 1700), 42, 2.25, (0.945, 0.972), 0.6, 0.35, (1, 1), (0, 1)
    ),
}

PRESCHOOL_NAMES = (
    "Hoa Sen", "Hoa Mai", "Sơn Ca", "Họa Mi", "Vành Khuyên", "Hướng Dương", "Tuổi Thơ",
    "Búp Măng", "Ánh Dương", "Hoa Hồng", "Sao Mai", "Rạng Đông", "Thỏ Ngọc", "Hoa Lan",
    "Bông Sen", "Măng Non", "Hoa Phượng", "Thiên Thần Nhỏ", "Ánh Sao", "Hoàng Anh",
)  # fmt: skip
PERSON_NAMES = (
    "Kim Đồng", "Lê Văn Tám", "Nguyễn Bỉnh Khiêm", "Võ Thị Sáu", "Trần Quốc Toản", "Nguyễn Du",
    "Lê Lợi", "Quang Trung", "Lý Thường Kiệt", "Hùng Vương", "Nguyễn Trãi", "Chu Văn An",
    "Trương Định", "Phan Bội Châu", "Lê Quý Đôn", "Trần Hưng Đạo", "Ngô Quyền", "Nguyễn Huệ",
    "Phan Chu Trinh", "Lương Thế Vinh", "Nguyễn Đình Chiểu", "Huỳnh Văn Nghệ", "Đinh Tiên Hoàng",
    "Tô Vĩnh Diện", "Bùi Thị Xuân", "Nguyễn Văn Trỗi", "Trần Phú", "Lê Hồng Phong",
    "Nguyễn Khuyến", "Hồ Xuân Hương", "Văn Lang", "Âu Lạc", "Lạc Long Quân", "Đoàn Thị Điểm",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class School:
    """One school of the province, with its size and habits."""

    code: str
    name: str
    level: Level
    commune_code: str
    commune_name: str
    enrolled: int  # enrolment at the start of the school year (sĩ số)
    classes: int
    teachers: int
    saturday: bool  # teaches on Saturday mornings too
    attendance: float  # the school's usual attendance rate

    @property
    def region(self) -> int:
        """A rough weather region: communes come from the package grouped by old district."""
        return int(self.commune_code) // 200


def communes(province_code: int) -> list[tuple[str, str]]:
    """(5-digit code, name) of every commune and ward of the province, after the 2025 reform."""
    wards = list(Ward.iter_by_province(ProvinceCode(province_code)))
    if not wards:
        raise ValueError(f"province {province_code} has no communes in vietnam-provinces")
    return [(f"{int(ward.code):05d}", ward.name) for ward in wards]


def build_schools(province_code: int, seed: int) -> list[School]:
    """A realistic, seeded set of schools: a few per commune, larger ones in urban wards."""
    rng = random.Random(f"{seed}:schools")
    schools: list[School] = []
    numbers = dict.fromkeys(Level, 0)
    for commune_code, commune_name in communes(province_code):
        urban = commune_name.startswith("Phường")
        place = commune_name.split(" ", 1)[1] if " " in commune_name else commune_name
        for level, profile in PROFILES.items():
            low, high = profile.per_ward if urban else profile.per_commune
            count = rng.randint(low, high)
            names = _school_names(rng, level, place, count)
            for name in names:
                numbers[level] += 1
                code = f"{province_code:02d}{profile.digit}{numbers[level]:05d}"
                schools.append(_school(rng, level, code, name, commune_code, commune_name, urban))
    # the province's gifted high school (trường chuyên) sits in its first, central ward
    first = next((i for i, s in enumerate(schools) if s.level is Level.UPPER_SECONDARY), None)
    if first is not None:
        gifted = schools[first]
        schools[first] = School(
            gifted.code, "Trường THPT chuyên Lương Thế Vinh", gifted.level, gifted.commune_code,
            gifted.commune_name, 1050, 30, 90, True, 0.985,
        )  # fmt: skip
    return schools


def _school_names(rng: random.Random, level: Level, place: str, count: int) -> list[str]:
    pool = PRESCHOOL_NAMES if level is Level.PRESCHOOL else PERSON_NAMES
    others = rng.sample(pool, k=max(0, count - 1))
    first = place if level is not Level.UPPER_SECONDARY else rng.choice(PERSON_NAMES)
    prefix = PROFILES[level].prefix
    return [f"{prefix} {name}" for name in [first, *others][:count]]


def _school(
    rng: random.Random,
    level: Level,
    code: str,
    name: str,
    commune_code: str,
    commune_name: str,
    urban: bool,
) -> School:
    profile = PROFILES[level]
    enrolled = rng.randint(*profile.enrolled) * (1.4 if urban else 1.0)
    classes = max(3, round(enrolled / (profile.class_size * rng.uniform(0.9, 1.1))))
    enrolled = round(enrolled)
    teachers = max(classes, round(classes * profile.teachers_per_class * rng.uniform(0.9, 1.1)))
    attendance = rng.uniform(*profile.attendance) - (0 if urban else 0.004)
    return School(
        code=code,
        name=name,
        level=level,
        commune_code=commune_code,
        commune_name=commune_name,
        enrolled=enrolled,
        classes=classes,
        teachers=teachers,
        saturday=rng.random() < profile.saturday_share,
        attendance=attendance,
    )


class SchoolCalendar:
    """School days: Monday to Friday (Saturday for some schools), no school on public holidays,
    in the Tết break or in the summer break (June to August)."""

    TET_BEFORE = timedelta(days=7)  # the break starts a week before Lunar New Year's Eve
    TET_AFTER = timedelta(days=3)  # and ends a few days after the last official Tết day off

    def __init__(self) -> None:
        self._holidays = holidays.Vietnam()
        self._tet: dict[int, tuple[date, date]] = {}

    def tet_break(self, year: int) -> tuple[date, date]:
        """First and last day of the Tết school break of `year`."""
        if year not in self._tet:
            days = [
                day
                for day, name in holidays.Vietnam(years=year).items()
                if "Lunar New Year" in name
            ]
            self._tet[year] = (min(days) - self.TET_BEFORE, max(days) + self.TET_AFTER)
        return self._tet[year]

    def is_open(self, day: date, *, saturday: bool = False) -> bool:
        """Whether a school (teaching on Saturdays or not) has classes on `day`."""
        if day.month in (6, 7, 8) or day.weekday() == 6 or (day.weekday() == 5 and not saturday):
            return False
        if day in self._holidays:
            return False
        first, last = self.tet_break(day.year)
        return not first <= day <= last

    def after_break(self, day: date) -> bool:
        """The first school day after days off beyond a weekend (returning pupils trickle in)."""
        previous = day - timedelta(days=1)
        while previous.weekday() >= 5:
            previous -= timedelta(days=1)
        return not self.is_open(previous)

    def holiday_name(self, day: date) -> str | None:
        """The public holiday on `day`, if any."""
        return self._holidays.get(day)
