"""Fields, agencies and procedures the one-stop-shop simulator draws its dossiers from.

Procedure codes have the shape of the national procedure database (CSDLQG về TTHC) and names
follow real procedures, but the catalogue is illustrative: working days, online shares, volumes
and late rates are plausible figures for a demo, not official ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Level(StrEnum):
    """Who handles a procedure: a provincial department, a land-registry branch or the commune."""

    DEPARTMENT = "department"  # sở, ngành cấp tỉnh
    LAND_BRANCH = "land_branch"  # Chi nhánh Văn phòng đăng ký đất đai
    COMMUNE = "commune"  # UBND cấp xã


@dataclass(frozen=True, slots=True)
class Field:
    """A field of administrative procedures (lĩnh vực)."""

    code: str
    name: str
    late_rate: float  # share of dossiers ending after their due date
    supplement_rate: float  # share of dossiers sent back for more papers (yêu cầu bổ sung)


@dataclass(frozen=True, slots=True)
class Department:
    """A provincial department (sở) after the 2025 reorganisation; `number` builds its code."""

    key: str
    number: int
    name: str


@dataclass(frozen=True, slots=True)
class Procedure:
    """An administrative procedure (thủ tục hành chính, TTHC) as the simulator offers it."""

    code: str
    name: str
    field: str  # Field.code
    level: Level
    working_days: int  # statutory time limit; 0 = the same working day
    weight: float  # relative daily volume
    online_share: float  # share submitted online (KenhThucHien 2)
    fee: int = 0  # phí, lệ phí in VND; 0 = free
    department: str | None = None  # Department.key when level is DEPARTMENT
    late_rate: float | None = None  # overrides the field's rate


FIELDS: dict[str, Field] = {
    f.code: f
    for f in (
        Field("G09-TN01", "Đất đai", late_rate=0.32, supplement_rate=0.08),
        Field("G09-TN02", "Môi trường", late_rate=0.14, supplement_rate=0.08),
        Field("G09-XD01", "Xây dựng", late_rate=0.05, supplement_rate=0.10),
        Field("G09-TC01", "Thành lập và hoạt động doanh nghiệp", 0.02, 0.05),
        Field("G09-TP01", "Hộ tịch", late_rate=0.02, supplement_rate=0.02),
        Field("G09-TP02", "Chứng thực", late_rate=0.005, supplement_rate=0.0),
        Field("G09-TP03", "Lý lịch tư pháp", late_rate=0.04, supplement_rate=0.02),
        Field("G09-NV01", "Lao động, tiền lương và việc làm", 0.03, 0.04),
        Field("G09-GD01", "Giáo dục và Đào tạo", late_rate=0.02, supplement_rate=0.03),
        Field("G09-YT01", "Khám bệnh, chữa bệnh", late_rate=0.04, supplement_rate=0.06),
        Field("G09-CT01", "Lưu thông hàng hóa trong nước", 0.03, 0.04),
        Field("G09-YT02", "Bảo trợ xã hội", late_rate=0.03, supplement_rate=0.04),
    )
}

DEPARTMENTS: dict[str, Department] = {
    d.key: d
    for d in (
        Department("SNNMT", 12, "Sở Nông nghiệp và Môi trường"),
        Department("SXD", 14, "Sở Xây dựng"),
        Department("STC", 10, "Sở Tài chính"),
        Department("STP", 16, "Sở Tư pháp"),
        Department("SNV", 8, "Sở Nội vụ"),
        Department("SGDDT", 18, "Sở Giáo dục và Đào tạo"),
        Department("SYT", 20, "Sở Y tế"),
        Department("SCT", 22, "Sở Công Thương"),
    )
}

NAMES: dict[str, str] = {
    "1.004227": "Đăng ký biến động quyền sử dụng đất, quyền sở hữu tài sản gắn liền với đất "
    "do chuyển nhượng, tặng cho, thừa kế",
    "1.012790": "Đăng ký đất đai, cấp Giấy chứng nhận quyền sử dụng đất, quyền sở hữu tài sản "
    "gắn liền với đất lần đầu",
    "1.004203": "Cấp đổi Giấy chứng nhận quyền sử dụng đất",
    "1.004217": "Đăng ký thế chấp quyền sử dụng đất, tài sản gắn liền với đất",
    "1.004193": "Xóa đăng ký thế chấp quyền sử dụng đất, tài sản gắn liền với đất",
    "1.012800": "Cấp lại Giấy chứng nhận quyền sử dụng đất do bị mất",
    "1.004269": "Tách thửa hoặc hợp thửa đất",
    "1.004206": "Chuyển mục đích sử dụng đất phải được phép của cơ quan nhà nước",
    "1.001990": "Đính chính Giấy chứng nhận quyền sử dụng đất đã cấp",
    "1.010727": "Cấp giấy phép môi trường",
    "1.010733": "Đăng ký môi trường",
    "1.004249": "Cấp giấy phép khai thác, sử dụng nước dưới đất",
    "1.009994": "Cấp giấy phép xây dựng mới đối với nhà ở riêng lẻ",
    "1.009972": "Cấp giấy phép xây dựng mới đối với công trình cấp đặc biệt, cấp I, II",
    "1.009992": "Thẩm định Báo cáo nghiên cứu khả thi đầu tư xây dựng",
    "1.001777": "Cấp chứng chỉ hành nghề hoạt động xây dựng",
    "2.001610": "Đăng ký thành lập công ty TNHH hai thành viên trở lên",
    "1.010010": "Đăng ký thay đổi nội dung đăng ký doanh nghiệp",
    "2.000575": "Đăng ký thành lập doanh nghiệp tư nhân",
    "1.001612": "Đăng ký thành lập hộ kinh doanh",
    "1.001193": "Đăng ký khai sinh",
    "1.000894": "Đăng ký kết hôn",
    "1.000656": "Đăng ký khai tử",
    "1.004873": "Cấp bản sao Trích lục hộ tịch",
    "1.004884": "Cấp Giấy xác nhận tình trạng hôn nhân",
    "2.000815": "Chứng thực bản sao từ bản chính giấy tờ, văn bản",
    "2.000884": "Chứng thực chữ ký trong các giấy tờ, văn bản",
    "2.001035": "Chứng thực hợp đồng, giao dịch liên quan đến quyền sử dụng đất",
    "2.000488": "Cấp Phiếu lý lịch tư pháp cho công dân Việt Nam",
    "1.001865": "Giải quyết hưởng trợ cấp thất nghiệp",
    "1.000105": "Cấp giấy phép lao động cho người lao động nước ngoài làm việc tại Việt Nam",
    "1.005095": "Cấp bản sao văn bằng, chứng chỉ từ sổ gốc",
    "1.001000": "Chuyển trường đối với học sinh trung học phổ thông",
    "2.001842": "Cho phép trung tâm ngoại ngữ, tin học hoạt động giáo dục",
    "1.003557": "Cấp giấy phép hành nghề khám bệnh, chữa bệnh",
    "2.000190": "Cấp Giấy phép bán lẻ sản phẩm rượu",
    "1.001776": "Thực hiện, điều chỉnh, thôi hưởng trợ cấp xã hội hàng tháng",
}


def _p(
    code: str,
    field: str,
    level: Level,
    working_days: int,
    weight: float,
    online_share: float,
    *,
    fee: int = 0,
    department: str | None = None,
    late_rate: float | None = None,
) -> Procedure:
    return Procedure(
        code=code,
        name=NAMES[code],
        field=field,
        level=level,
        working_days=working_days,
        weight=weight,
        online_share=online_share,
        fee=fee,
        department=department,
        late_rate=late_rate,
    )


D, B, C = Level.DEPARTMENT, Level.LAND_BRANCH, Level.COMMUNE
LAND, ENV, BUILD, BUSINESS = "G09-TN01", "G09-TN02", "G09-XD01", "G09-TC01"
CIVIL, NOTARY, RECORD, LABOUR = "G09-TP01", "G09-TP02", "G09-TP03", "G09-NV01"
EDU, HEALTH, TRADE, WELFARE = "G09-GD01", "G09-YT01", "G09-CT01", "G09-YT02"

# code, field, level, working days, relative volume, online share, then extras
PROCEDURES: tuple[Procedure, ...] = (
    # Đất đai: mostly the land-registry branches; where late dossiers pile up
    _p("1.004227", LAND, B, 10, 9.0, 0.30, fee=100_000),
    _p("1.012790", LAND, B, 20, 3.0, 0.20, fee=100_000, late_rate=0.4),
    _p("1.004203", LAND, B, 7, 3.0, 0.35, fee=50_000),
    _p("1.004217", LAND, B, 1, 5.0, 0.60, fee=80_000, late_rate=0.12),
    _p("1.004193", LAND, B, 1, 4.0, 0.60, fee=20_000, late_rate=0.12),
    _p("1.012800", LAND, B, 10, 1.0, 0.20, fee=50_000),
    _p("1.004269", LAND, B, 15, 2.0, 0.25, fee=50_000),
    _p("1.004206", LAND, C, 15, 2.0, 0.20, fee=50_000, late_rate=0.38),
    _p("1.001990", LAND, B, 5, 1.0, 0.30),
    # Môi trường
    _p("1.010727", ENV, D, 30, 0.3, 0.50, fee=2_000_000, department="SNNMT"),
    _p("1.010733", ENV, C, 5, 1.0, 0.40),
    _p("1.004249", ENV, D, 30, 0.2, 0.40, fee=1_000_000, department="SNNMT"),
    # Xây dựng
    _p("1.009994", BUILD, C, 15, 5.0, 0.50, fee=75_000),
    _p("1.009972", BUILD, D, 20, 0.5, 0.60, fee=150_000, department="SXD"),
    _p("1.009992", BUILD, D, 25, 0.3, 0.70, fee=500_000, department="SXD"),
    _p("1.001777", BUILD, D, 20, 0.5, 0.90, fee=300_000, department="SXD"),
    # Thành lập và hoạt động doanh nghiệp: business registration sits with Sở Tài chính
    _p("2.001610", BUSINESS, D, 3, 3.0, 0.95, fee=50_000, department="STC"),
    _p("1.010010", BUSINESS, D, 3, 3.0, 0.95, fee=50_000, department="STC"),
    _p("2.000575", BUSINESS, D, 3, 0.5, 0.90, fee=50_000, department="STC"),
    _p("1.001612", BUSINESS, C, 3, 3.0, 0.60, fee=100_000),
    # Hộ tịch, chứng thực, lý lịch tư pháp
    _p("1.001193", CIVIL, C, 1, 7.0, 0.70),
    _p("1.000894", CIVIL, C, 1, 2.0, 0.40),
    _p("1.000656", CIVIL, C, 1, 1.5, 0.50),
    _p("1.004873", CIVIL, C, 0, 3.0, 0.60, fee=8_000),
    _p("1.004884", CIVIL, C, 3, 3.0, 0.60),
    _p("2.000815", NOTARY, C, 0, 15.0, 0.10, fee=2_000),
    _p("2.000884", NOTARY, C, 0, 4.0, 0.05, fee=10_000),
    _p("2.001035", NOTARY, C, 2, 3.0, 0.05, fee=50_000),
    _p("2.000488", RECORD, D, 10, 3.0, 0.80, fee=200_000, department="STP"),
    # Lao động, việc làm: Sở Nội vụ since 2025
    _p("1.001865", LABOUR, D, 20, 2.0, 0.40, department="SNV"),
    _p("1.000105", LABOUR, D, 5, 0.5, 0.90, fee=600_000, department="SNV"),
    # Giáo dục, y tế, công thương, bảo trợ xã hội
    _p("1.005095", EDU, D, 1, 0.5, 0.70, department="SGDDT"),
    _p("1.001000", EDU, D, 3, 0.5, 0.50, department="SGDDT"),
    _p("2.001842", EDU, D, 20, 0.1, 0.80, department="SGDDT"),
    _p("1.003557", HEALTH, D, 20, 0.3, 0.70, fee=360_000, department="SYT"),
    _p("2.000190", TRADE, C, 10, 0.3, 0.60, fee=200_000),
    _p("1.001776", WELFARE, C, 10, 1.0, 0.30),
)

LAND_REGISTRY_NUMBER = 12  # the branches hang under Sở Nông nghiệp và Môi trường (number 12)
COMMUNES_PER_LAND_BRANCH = 8

APPLICATION_FORM = "Đơn đề nghị (tờ khai)"
"""The first document of every dossier: filled in by the applicant, never from a data store."""

DOCUMENTS: tuple[tuple[str, bool], ...] = (
    # (document name, whether the national data stores can supply it: DuocLayTuKhoDMQG)
    ("Căn cước công dân", True),
    ("Giấy xác nhận thông tin cư trú", True),
    ("Giấy chứng nhận quyền sử dụng đất", True),
    ("Giấy chứng nhận đăng ký doanh nghiệp", True),
    ("Hợp đồng, văn bản giao dịch", False),
    ("Bản vẽ, sơ đồ kỹ thuật", False),
    ("Giấy ủy quyền", False),
    ("Giấy tờ chứng minh khác", False),
)
"""Documents (giấy tờ, thành phần hồ sơ) a dossier may carry besides the application form."""
