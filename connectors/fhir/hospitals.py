"""The simulated hospitals of a province: names, communes, beds, volumes and habits."""

from __future__ import annotations

from dataclasses import dataclass

from vietnam_provinces import Province, ProvinceCode, Ward


@dataclass(frozen=True, slots=True)
class Hospital:
    """One hospital (an FHIR Organization) at full, real-life scale."""

    id: str  # Organization.id, also the prefix of its encounter and location ids
    prefix: str
    name: str
    alias: str
    insurance_code: str  # mã cơ sở khám chữa bệnh BHYT (illustrative)
    commune_name: str
    street: str
    beds: int
    outpatients_per_day: int  # AMB arrivals on an ordinary Thursday
    emergencies_per_day: int
    median_stay_days: float  # inpatient length of stay
    occupancy_target: float  # the mean bed occupancy the admissions aim at
    referral_rate: float  # share of inpatients referred out (chuyển tuyến)
    wards: tuple[str, ...]


GENERAL_WARDS = (
    "Khoa Nội tổng hợp",
    "Khoa Ngoại tổng hợp",
    "Khoa Sản",
    "Khoa Nhi",
    "Khoa Hồi sức tích cực - Chống độc",
    "Khoa Truyền nhiễm",
)
CHILDREN_WARDS = (
    "Khoa Nội tổng hợp",
    "Khoa Sơ sinh",
    "Khoa Hô hấp",
    "Khoa Ngoại - Chấn thương",
    "Khoa Hồi sức tích cực - Chống độc",
    "Khoa Sốt xuất huyết",
)
REGIONAL_WARDS = ("Khoa Nội", "Khoa Ngoại", "Khoa Sản", "Khoa Nhi", "Khoa Hồi sức cấp cứu")

DONG_NAI = (
    Hospital(
        "bvdk-dong-nai", "dkdn", "Bệnh viện Đa khoa Đồng Nai", "BVĐK Đồng Nai", "75001",
        "Phường Tam Hiệp", "2 Đồng Khởi", 1400, 3000, 200, 6.0, 0.9, 0.03, GENERAL_WARDS,
    ),
    Hospital(
        "bvdk-thong-nhat", "dktn", "Bệnh viện Đa khoa Thống Nhất", "BVĐK Thống Nhất", "75002",
        "Phường Hố Nai", "234 Quốc lộ 1A", 1000, 2500, 150, 5.5, 0.85, 0.04, GENERAL_WARDS,
    ),
    Hospital(
        "bv-nhi-dong-nai", "nhdn", "Bệnh viện Nhi đồng Đồng Nai", "BV Nhi đồng Đồng Nai", "75003",
        "Phường Trấn Biên", "Đường Đồng Khởi", 700, 1800, 150, 4.0, 0.86, 0.04, CHILDREN_WARDS,
    ),
    Hospital(
        "bvdk-binh-phuoc", "dkbp", "Bệnh viện Đa khoa Bình Phước", "BVĐK Bình Phước", "75004",
        "Phường Đồng Xoài", "Đường Trần Hưng Đạo", 800, 1500, 100, 5.5, 0.82, 0.06, GENERAL_WARDS,
    ),
    Hospital(
        "bvdkkv-long-khanh", "dklk", "Bệnh viện Đa khoa khu vực Long Khánh",
        "BVĐKKV Long Khánh", "75005", "Phường Long Khánh", "911 Hồ Thị Hương",
        600, 1500, 90, 5.0, 0.78, 0.08, REGIONAL_WARDS,
    ),
    Hospital(
        "bvdkkv-dinh-quan", "dkdq", "Bệnh viện Đa khoa khu vực Định Quán",
        "BVĐKKV Định Quán", "75006", "Xã Định Quán", "Quốc lộ 20",
        350, 900, 60, 4.5, 0.78, 0.1, REGIONAL_WARDS,
    ),
    Hospital(
        "ttyt-long-thanh", "ttlt", "Trung tâm Y tế khu vực Long Thành",
        "TTYT khu vực Long Thành", "75007", "Xã Long Thành", "Đường Lê Duẩn",
        300, 900, 60, 4.5, 0.78, 0.1, REGIONAL_WARDS,
    ),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Site:
    """A hospital placed in a real commune of the configured province."""

    hospital: Hospital
    commune_code: str  # 5 digits
    commune_name: str
    province_name: str


def sites(province_code: int) -> list[Site]:
    """The simulated hospitals, each in a commune of `province_code` (Đồng Nai's real ones)."""
    wards = list(Ward.iter_by_province(ProvinceCode(province_code)))
    if not wards:
        raise ValueError(f"province {province_code} has no communes in vietnam-provinces")
    province_name = Province.from_code(ProvinceCode(province_code)).name
    by_name = {ward.name: ward for ward in wards}
    placed = []
    for index, hospital in enumerate(DONG_NAI):
        ward = by_name.get(hospital.commune_name)
        if ward is None:  # another province: same hospitals, spread over its first communes
            ward = wards[(index * 7) % len(wards)]
        placed.append(Site(hospital, f"{int(ward.code):05d}", ward.name, province_name))
    return placed
