"""What the simulated feedback system (hệ thống tiếp nhận phản ánh kiến nghị) knows: its service
categories, who handles them, how fast, and the words citizens use; plus rough commune locations.

Agency names follow the 2025 reorganisation; SLAs are working days (DOMAIN.md: 15 by default,
shorter for urgent categories). Illustrative, not an official catalogue.
"""

from __future__ import annotations

from dataclasses import dataclass

COMMUNE_AGENCY = "{commune}"  # placeholder: the request's own commune People's Committee (UBND)


@dataclass(frozen=True, slots=True)
class Service:
    """One Open311 service: a feedback category, the agency that owns it and its SLA."""

    code: str
    name: str
    group: str
    description: str
    keywords: tuple[str, ...]
    agency: str
    sla_working_days: int
    weight: float
    late_rate: float
    complaints: tuple[str, ...]
    results: tuple[str, ...]


SERVICES: tuple[Service, ...] = (
    Service(
        code="GT01",
        name="Đường hư hỏng, ổ gà",
        group="Hạ tầng giao thông",
        description="Mặt đường, vỉa hè, cầu cống bị hư hỏng, sụt lún, ổ gà.",
        keywords=("đường", "ổ gà", "sụt lún", "hư hỏng"),
        agency="Sở Xây dựng",
        sla_working_days=10,
        weight=14,
        late_rate=0.16,
        complaints=(
            "{street} đoạn trước nhà số {number} có nhiều ổ gà lớn, xe máy đi lại rất nguy "
            "hiểm, đề nghị sửa chữa.",
            "Mặt đường {street} bị sụt lún sau mưa, nước đọng thành vũng, đề nghị kiểm tra.",
            "Nắp cống trên {street} bị vỡ, có nguy cơ gây tai nạn.",
        ),
        results=(
            "Đã vá ổ gà, thảm lại mặt đường đoạn phản ánh.",
            "Đã thay nắp cống, cắm biển cảnh báo trong thời gian thi công.",
        ),
    ),
    Service(
        code="GT02",
        name="Đèn tín hiệu giao thông hư hỏng",
        group="Hạ tầng giao thông",
        description="Đèn tín hiệu giao thông không hoạt động, hoạt động sai.",
        keywords=("đèn tín hiệu", "đèn giao thông"),
        agency="Sở Xây dựng",
        sla_working_days=3,
        weight=3,
        late_rate=0.08,
        complaints=(
            "Đèn tín hiệu giao thông tại ngã tư {street} không hoạt động từ sáng, ùn tắc kéo dài.",
            "Đèn đỏ tại giao lộ {street} chuyển quá nhanh, người đi bộ không kịp qua đường.",
        ),
        results=("Đã sửa chữa bộ điều khiển đèn tín hiệu, đèn hoạt động bình thường.",),
    ),
    Service(
        code="CS01",
        name="Đèn chiếu sáng công cộng không hoạt động",
        group="Chiếu sáng công cộng",
        description="Đèn đường tắt, chập chờn, cột đèn nghiêng đổ.",
        keywords=("đèn đường", "chiếu sáng"),
        agency=COMMUNE_AGENCY,
        sla_working_days=5,
        weight=10,
        late_rate=0.07,
        complaints=(
            "Dãy đèn đường trên {street} tắt nhiều đêm liền, khu vực tối, mất an ninh.",
            "Cột đèn chiếu sáng gần nhà số {number} {street} bị nghiêng, có nguy cơ đổ.",
        ),
        results=("Đã thay bóng đèn, khắc phục sự cố nguồn điện chiếu sáng.",),
    ),
    Service(
        code="MT01",
        name="Rác thải, vệ sinh môi trường",
        group="Môi trường",
        description="Rác thải tồn đọng, đổ rác không đúng nơi quy định, thu gom trễ.",
        keywords=("rác", "vệ sinh", "thu gom"),
        agency=COMMUNE_AGENCY,
        sla_working_days=5,
        weight=16,
        late_rate=0.09,
        complaints=(
            "Rác thải tồn đọng nhiều ngày trên {street}, bốc mùi hôi thối, đề nghị thu gom.",
            "Có người đổ trộm xà bần, rác thải xây dựng ven {street} vào ban đêm.",
            "Xe thu gom rác không đến {street} đã ba ngày.",
        ),
        results=(
            "Đã chỉ đạo đơn vị thu gom dọn sạch điểm rác, tăng cường kiểm tra.",
            "Đã thu gom, lắp camera và biển cấm đổ rác tại điểm phản ánh.",
        ),
    ),
    Service(
        code="MT02",
        name="Ngập nước, tắc cống thoát nước",
        group="Thoát nước đô thị",
        description="Ngập úng khi mưa, cống thoát nước bị tắc, tràn.",
        keywords=("ngập", "cống", "thoát nước"),
        agency="Sở Xây dựng",
        sla_working_days=3,
        weight=9,
        late_rate=0.22,
        complaints=(
            "Mỗi khi mưa lớn {street} ngập sâu 40–50 cm, nước tràn vào nhà dân.",
            "Cống thoát nước trên {street} bị tắc, nước thải tràn ra mặt đường.",
        ),
        results=(
            "Đã nạo vét, khơi thông cống thoát nước đoạn phản ánh.",
            "Đã đưa vào kế hoạch cải tạo tuyến cống, tạm thời bố trí bơm tiêu khi mưa.",
        ),
    ),
    Service(
        code="MT03",
        name="Ô nhiễm tiếng ồn",
        group="Môi trường",
        description="Tiếng ồn từ karaoke, cơ sở sản xuất, công trình thi công ban đêm.",
        keywords=("tiếng ồn", "karaoke", "ồn ào"),
        agency="Sở Nông nghiệp và Môi trường",
        sla_working_days=7,
        weight=7,
        late_rate=0.12,
        complaints=(
            "Quán karaoke trên {street} hát đến khuya, gây ồn ào ảnh hưởng người dân.",
            "Xưởng cơ khí gần nhà số {number} {street} hoạt động cả ban đêm, rất ồn.",
        ),
        results=("Đã kiểm tra, lập biên bản và yêu cầu cơ sở chấm dứt gây ồn sau 22 giờ.",),
    ),
    Service(
        code="MT04",
        name="Ô nhiễm không khí, mùi hôi",
        group="Môi trường",
        description="Khói bụi, mùi hôi từ cơ sở chăn nuôi, sản xuất, đốt rác.",
        keywords=("khói", "bụi", "mùi hôi"),
        agency="Sở Nông nghiệp và Môi trường",
        sla_working_days=15,
        weight=5,
        late_rate=0.18,
        complaints=(
            "Trại heo gần {street} xả mùi hôi nồng nặc, người dân rất bức xúc.",
            "Có người đốt rác, đốt đồng gây khói mù mịt khu vực {street}.",
        ),
        results=("Đã kiểm tra, xử phạt vi phạm hành chính và yêu cầu cơ sở khắc phục.",),
    ),
    Service(
        code="DT01",
        name="Lấn chiếm vỉa hè, lòng đường",
        group="Trật tự đô thị",
        description="Buôn bán, để vật dụng, xe trên vỉa hè và lòng đường.",
        keywords=("lấn chiếm", "vỉa hè", "hàng rong"),
        agency=COMMUNE_AGENCY,
        sla_working_days=7,
        weight=9,
        late_rate=0.1,
        complaints=(
            "Các hộ kinh doanh trên {street} bày hàng ra hết vỉa hè, người đi bộ phải xuống "
            "lòng đường.",
            "Xe tải đậu thường xuyên trên {street} gây cản trở giao thông.",
        ),
        results=("Đã ra quân lập lại trật tự vỉa hè, nhắc nhở và xử phạt các trường hợp vi phạm.",),
    ),
    Service(
        code="DT02",
        name="Xây dựng không phép, sai phép",
        group="Trật tự đô thị",
        description="Công trình xây dựng không phép, sai phép, lấn chiếm đất công.",
        keywords=("xây dựng", "không phép", "sai phép"),
        agency=COMMUNE_AGENCY,
        sla_working_days=15,
        weight=5,
        late_rate=0.25,
        complaints=(
            "Công trình tại số {number} {street} xây dựng không có giấy phép, lấn ra hành lang "
            "đường.",
            "Nhà xây sai phép, cơi nới tầng trên {street}.",
        ),
        results=("Đã kiểm tra, lập biên bản đình chỉ thi công và xử lý theo quy định.",),
    ),
    Service(
        code="CX01",
        name="Cây xanh gãy đổ, nguy hiểm",
        group="Cây xanh đô thị",
        description="Cây xanh có nguy cơ gãy đổ, che khuất đèn, biển báo.",
        keywords=("cây xanh", "gãy đổ"),
        agency=COMMUNE_AGENCY,
        sla_working_days=3,
        weight=4,
        late_rate=0.08,
        complaints=(
            "Cây xanh trước nhà số {number} {street} bị mục gốc, nghiêng ra đường, nguy hiểm.",
            "Cành cây gãy sau giông đè lên {street}, chưa được dọn.",
        ),
        results=("Đã cắt tỉa, đốn hạ cây nguy hiểm và dọn dẹp hiện trường.",),
    ),
    Service(
        code="TP01",
        name="An toàn thực phẩm",
        group="An toàn thực phẩm",
        description="Thực phẩm không rõ nguồn gốc, cơ sở kinh doanh ăn uống mất vệ sinh.",
        keywords=("thực phẩm", "ngộ độc", "vệ sinh"),
        agency="Sở Y tế",
        sla_working_days=10,
        weight=4,
        late_rate=0.1,
        complaints=(
            "Quán ăn trên {street} chế biến thực phẩm mất vệ sinh, nghi dùng thịt không rõ nguồn"
            " gốc.",
            "Cơ sở sản xuất giò chả gần {street} không đảm bảo vệ sinh an toàn thực phẩm.",
        ),
        results=("Đã kiểm tra cơ sở, lấy mẫu xét nghiệm và xử phạt vi phạm.",),
    ),
    Service(
        code="HC01",
        name="Thủ tục hành chính",
        group="Hành chính công",
        description=(
            "Trễ hạn giải quyết hồ sơ, thái độ cán bộ, yêu cầu giấy tờ không đúng quy định."
        ),
        keywords=("thủ tục", "hồ sơ", "cán bộ"),
        agency="Văn phòng UBND tỉnh",
        sla_working_days=15,
        weight=6,
        late_rate=0.06,
        complaints=(
            "Hồ sơ cấp giấy chứng nhận quyền sử dụng đất của tôi đã quá hẹn nhưng chưa có kết "
            "quả, đề nghị xem xét.",
            "Cán bộ tiếp nhận hồ sơ yêu cầu bổ sung giấy tờ không có trong quy định.",
        ),
        results=(
            "Đã chỉ đạo đơn vị giải quyết hồ sơ, gửi phiếu xin lỗi và hẹn lại ngày trả kết quả.",
            "Đã kiểm điểm cán bộ, hướng dẫn công dân hoàn thiện hồ sơ theo quy định.",
        ),
    ),
    Service(
        code="DN01",
        name="Cấp nước sinh hoạt",
        group="Điện, nước",
        description="Mất nước, nước yếu, nước đục, bể đường ống.",
        keywords=("nước sạch", "mất nước", "bể ống"),
        agency="Công ty Cổ phần Cấp nước Đồng Nai",
        sla_working_days=5,
        weight=5,
        late_rate=0.08,
        complaints=(
            "Khu vực {street} mất nước sinh hoạt hai ngày nay không được thông báo.",
            "Đường ống nước bị bể trước nhà số {number} {street}, nước chảy lênh láng.",
        ),
        results=("Đã sửa chữa đường ống, cấp nước trở lại bình thường.",),
    ),
    Service(
        code="AN01",
        name="An ninh trật tự",
        group="An ninh trật tự",
        description="Tụ tập gây rối, đua xe, trộm cắp, tệ nạn xã hội.",
        keywords=("đua xe", "gây rối", "trộm cắp"),
        agency="Công an tỉnh Đồng Nai",
        sla_working_days=10,
        weight=3,
        late_rate=0.05,
        complaints=(
            "Thanh niên tụ tập đua xe trên {street} vào ban đêm, gây mất an ninh trật tự.",
            "Nhiều vụ trộm xe máy xảy ra gần {street}, đề nghị tăng cường tuần tra.",
        ),
        results=("Đã tăng cường tuần tra, xử lý các đối tượng vi phạm.",),
    ),
)
"""The categories served by `/services.json`, in catalogue order."""

STREETS: tuple[str, ...] = (
    "đường 30 Tháng 4",
    "đường Phạm Văn Thuận",
    "đường Đồng Khởi",
    "đường Võ Thị Sáu",
    "đường Nguyễn Ái Quốc",
    "đường Hùng Vương",
    "đường Lê Duẩn",
    "đường Trần Hưng Đạo",
    "đường Nguyễn Văn Trỗi",
    "đường Cách Mạng Tháng Tám",
    "đường Hà Huy Giáp",
    "đường Nguyễn Huệ",
    "Quốc lộ 1A",
    "Quốc lộ 20",
    "Quốc lộ 51",
    "Quốc lộ 13",
    "Quốc lộ 14",
    "đường tỉnh 741",
    "đường tỉnh 769",
    "hương lộ 10",
)
"""Street names used in addresses and descriptions."""

ROADS: tuple[str, ...] = tuple(
    name for name in STREETS if name.startswith(("Quốc lộ", "đường tỉnh", "hương lộ"))
)
"""Roads outside towns, where a report has only a kilometre post and a position."""

HAMLETS: tuple[str, str] = ("khu phố", "ấp")
"""Sub-commune divisions: khu phố in wards (phường), ấp in communes (xã)."""

AREA_CENTRES: dict[tuple[float, float], tuple[str, ...]] = {
    (10.95, 106.84): (
        "Biên Hòa", "Trấn Biên", "Tam Hiệp", "Long Bình", "Trảng Dài", "Hố Nai", "Long Hưng",
        "Tân Triều",
    ),
    (10.88, 106.93): ("Tam Phước", "Phước Tân"),
    (10.71, 106.89): ("Đại Phước", "Nhơn Trạch", "Phước An", "Phước Thái"),
    (10.78, 107.00): ("Long Phước", "Bình An", "Long Thành", "An Phước", "An Viễn"),
    (10.95, 107.01): ("Bình Minh", "Trảng Bom", "Bàu Hàm", "Hưng Thịnh"),
    (10.97, 107.15): ("Dầu Giây", "Gia Kiệm", "Thống Nhất"),
    (10.93, 107.24): ("Bình Lộc", "Bảo Vinh", "Xuân Lập", "Long Khánh", "Hàng Gòn"),
    (10.80, 107.28): ("Xuân Quế", "Xuân Đường", "Cẩm Mỹ", "Sông Ray"),
    (10.92, 107.45): (
        "Xuân Đông", "Xuân Định", "Xuân Phú", "Xuân Lộc", "Xuân Hòa", "Xuân Thành", "Xuân Bắc",
    ),
    (11.19, 107.35): ("La Ngà", "Định Quán", "Phú Vinh", "Phú Hòa", "Tà Lài", "Thanh Sơn"),
    (11.30, 107.43): ("Nam Cát Tiên", "Tân Phú", "Phú Lâm", "Đak Lua"),
    (11.12, 107.05): ("Trị An", "Tân An", "Phú Lý"),
    (11.45, 106.65): ("Minh Hưng", "Chơn Thành", "Nha Bích"),
    (11.56, 106.68): ("Tân Quan", "Tân Hưng", "Tân Khai", "Minh Đức"),
    (11.65, 106.60): ("Bình Long", "An Lộc"),
    (11.84, 106.59): ("Lộc Thành", "Lộc Ninh", "Lộc Hưng", "Lộc Tấn", "Lộc Thạnh", "Lộc Quang"),
    (11.98, 106.82): ("Tân Tiến", "Thiện Hưng", "Hưng Phước"),
    (11.93, 107.00): ("Phú Nghĩa", "Đa Kia"),
    (11.83, 106.99): ("Phước Bình", "Phước Long", "Bình Tân"),
    (11.70, 106.93): ("Long Hà", "Phú Riềng", "Phú Trung"),
    (11.54, 106.89): ("Đồng Xoài", "Bình Phước"),
    (11.48, 107.05): ("Thuận Lợi", "Đồng Tâm", "Tân Lợi", "Đồng Phú"),
    (11.78, 107.25): ("Phước Sơn", "Nghĩa Trung", "Bù Đăng", "Thọ Sơn", "Đak Nhau", "Bom Bo"),
    (12.05, 107.10): ("Bù Gia Mập", "Đăk Ơ"),
}  # fmt: skip
"""Approximate centres of Đồng Nai's former districts, by the bare names of their communes."""

PROVINCE_CENTRE = (11.2, 107.0)
"""Fallback location for communes without an area centre (other provinces)."""
