"""Connector for hospital information systems over HL7 FHIR R4 (Encounter, bed Location).

One poll reads one page. A poll sequence pages `Encounter?_lastUpdated=gt{watermark − overlap}`
through `Bundle.link[next]` to the end, saves the new watermark, then (optionally) pages the bed
Locations and emits one `BedCensus` per hospital.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ioc.sdk import (
    Batch,
    BedCensus,
    ConnectorAuthError,
    ConnectorError,
    ConnectorRateLimited,
    ConnectorUnavailable,
    Cursor,
    Encounter,
    EncounterClass,
    HttpConfig,
    HttpConnector,
    Record,
    RecordRejected,
    Rejected,
    advance_watermark,
    retry_after_seconds,
)

LOCAL = ZoneInfo("Asia/Ho_Chi_Minh")
FHIR_JSON = "application/fhir+json"
COMMUNE_CODE_EXTENSION = "https://ioc.gov.vn/fhir/StructureDefinition/commune-code"
MAX_SEEN = 500  # (id, versionId) pairs kept in the cursor to skip the overlap's re-reads
STATUSES = frozenset(
    {
        "planned",
        "arrived",
        "triaged",
        "in-progress",
        "onleave",
        "finished",
        "cancelled",
        "entered-in-error",
        "unknown",
    }
)
CLASSES = {
    "AMB": EncounterClass.AMBULATORY,
    "IMP": EncounterClass.INPATIENT,
    "ACUTE": EncounterClass.INPATIENT,  # inpatient acute
    "NONAC": EncounterClass.INPATIENT,  # inpatient non-acute
    "EMER": EncounterClass.EMERGENCY,
    "SS": EncounterClass.SHORT_STAY,
    "OBSENC": EncounterClass.SHORT_STAY,  # observation
}


# ---------------------------------------------------------------- facilities


class Facility(BaseModel):
    """A hospital (FHIR Organization) as the connector needs it."""

    model_config = ConfigDict(frozen=True)

    code: str
    name: str
    unit_code: str | None


def map_facility(resource: Mapping[str, Any]) -> Facility:
    """An Organization resource as a `Facility`; its commune code from an address extension."""
    unit_code = None
    for address in resource.get("address") or []:
        for extension in address.get("extension") or []:
            if extension.get("url") == COMMUNE_CODE_EXTENSION and extension.get("valueCode"):
                unit_code = str(extension["valueCode"])
                break
        if unit_code:
            break
    return Facility(
        code=str(resource.get("id") or ""),
        name=str(resource.get("name") or ""),
        unit_code=unit_code,
    )


Facilities = Mapping[str, Facility]


def _reference_id(reference: Any, resource_type: str) -> str | None:
    """The id in a `{"reference": "Type/id"}` (relative or absolute, maybe versioned)."""
    if not isinstance(reference, Mapping) or not isinstance(reference.get("reference"), str):
        return None
    parts = reference["reference"].split("/_history/")[0].rstrip("/").split("/")
    if len(parts) < 2 or parts[-2] != resource_type or not parts[-1]:
        return None
    return parts[-1]


# ---------------------------------------------------------------- mapping


def parse_fhir_time(value: Any, where: str) -> datetime | None:
    """A FHIR dateTime/instant as aware UTC; a bare date counts as local midnight."""
    if value is None or value == "":
        return None
    text = str(value)
    if len(text) == 10:  # YYYY-MM-DD: no time, no zone
        try:
            return datetime.combine(date.fromisoformat(text), time(), LOCAL).astimezone(UTC)
        except ValueError:
            raise RecordRejected(f"{where} {text!r} is not a FHIR date") from None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise RecordRejected(f"{where} {text!r} is not a FHIR dateTime") from None
    if moment.tzinfo is None:
        raise RecordRejected(f"{where} {text!r} has no UTC offset")
    return moment.astimezone(UTC)


def _class_code(resource: Mapping[str, Any]) -> str | None:
    value = resource.get("class")
    if isinstance(value, list):  # R5 made class a list of CodeableConcepts; accept the first
        value = value[0] if value else None
        if isinstance(value, Mapping) and value.get("coding"):
            value = value["coding"][0]
    if isinstance(value, Mapping) and value.get("code"):
        return str(value["code"])
    return None


def _history_start(resource: Mapping[str, Any], status: str) -> datetime | None:
    for entry in resource.get("statusHistory") or []:
        if isinstance(entry, Mapping) and entry.get("status") == status:
            period = entry.get("period") or {}
            return parse_fhir_time(period.get("start"), f"statusHistory {status} period.start")
    return None


def wait_minutes(resource: Mapping[str, Any]) -> float | None:
    """Minutes from arrival to in-progress, from statusHistory; None until both are there."""
    arrived = _history_start(resource, "arrived")
    started = _history_start(resource, "in-progress")
    if arrived is None or started is None:
        return None
    if started < arrived:
        raise RecordRejected(
            f"statusHistory: in-progress ({started.isoformat()}) is before arrived "
            f"({arrived.isoformat()})"
        )
    return round((started - arrived).total_seconds() / 60, 2)


def _disposition(resource: Mapping[str, Any]) -> str | None:
    concept = (resource.get("hospitalization") or {}).get("dischargeDisposition")
    if not isinstance(concept, Mapping):
        return None
    for coding in concept.get("coding") or []:
        if isinstance(coding, Mapping) and coding.get("code"):
            return str(coding["code"])
    return str(concept["text"]) if concept.get("text") else None


def facility_of(
    reference: Any, facilities: Facilities, units: Mapping[str, str], *, what: str
) -> tuple[Facility, str]:
    """The facility a reference points at and its commune code, or a rejection saying why."""
    facility_id = _reference_id(reference, "Organization")
    if facility_id is None:
        raise RecordRejected(f"missing {what} (an Organization reference)")
    facility = facilities.get(facility_id)
    if facility is None:
        label = reference.get("reference") if isinstance(reference, Mapping) else reference
        raise RecordRejected(f"{what} {label} is not a known hospital")
    unit_code = units.get(facility.code) or facility.unit_code
    if not unit_code:
        raise RecordRejected(
            f"hospital {facility.code} ({facility.name}) has no commune code: add the "
            f"{COMMUNE_CODE_EXTENSION} address extension or a facility_units entry"
        )
    return facility, unit_code


def map_encounter(
    resource: Mapping[str, Any],
    facilities: Facilities,
    *,
    units: Mapping[str, str] | None = None,
    referral_codes: frozenset[str] = frozenset({"other-hcf"}),
) -> Encounter:
    """One FHIR R4 Encounter as a canonical `Encounter`."""
    if resource.get("resourceType") != "Encounter":
        raise RecordRejected(f"not an Encounter but {resource.get('resourceType')!r}")
    encounter_id = resource.get("id")
    if not encounter_id:
        raise RecordRejected("missing id (Encounter.id)")
    meta = resource.get("meta") or {}
    updated = parse_fhir_time(meta.get("lastUpdated"), "meta.lastUpdated")
    if updated is None:
        raise RecordRejected("missing meta.lastUpdated")
    status = resource.get("status")
    if status not in STATUSES:
        raise RecordRejected(f"unknown status {status!r} (Encounter.status)")
    code = _class_code(resource)
    if code is None:
        raise RecordRejected("missing class (Encounter.class)")
    facility, unit_code = facility_of(
        resource.get("serviceProvider"), facilities, units or {}, what="serviceProvider"
    )
    period = resource.get("period") or {}
    disposition = _disposition(resource)
    return Encounter(
        external_id=str(encounter_id),
        version_id=str(meta.get("versionId") or ""),
        unit_code=unit_code,
        source_updated_at=updated,
        facility_code=facility.code,
        facility_name=facility.name,
        encounter_class=CLASSES.get(code, EncounterClass.OTHER),
        status=status,
        start_at=parse_fhir_time(period.get("start"), "period.start"),
        end_at=parse_fhir_time(period.get("end"), "period.end"),
        wait_minutes=wait_minutes(resource),
        discharge_disposition=disposition,
        referred_out=disposition in referral_codes,
    )


def count_beds(locations: list[Mapping[str, Any]], counts: dict[str, list[int]]) -> list[Rejected]:
    """Add bed Locations to per-hospital [total, occupied, closed] counts; the unusable ones."""
    rejected = []
    for location in locations:
        types = ((location.get("physicalType") or {}).get("coding")) or []
        if not any(isinstance(c, Mapping) and c.get("code") == "bd" for c in types):
            continue  # a ward or room: not a bed
        if location.get("status") == "inactive":
            continue  # retired beds are not beds
        facility_id = _reference_id(location.get("managingOrganization"), "Organization")
        if facility_id is None:
            rejected.append(
                Rejected(
                    external_id=str(location.get("id") or "") or None,
                    reason="bed Location has no managingOrganization",
                    payload=dict(location),
                )
            )
            continue
        code = (location.get("operationalStatus") or {}).get("code")
        closed = code == "C" or (code is None and location.get("status") == "suspended")
        tally = counts.setdefault(facility_id, [0, 0, 0])
        tally[0] += 1
        tally[1] += code == "O"
        tally[2] += closed
    return rejected


# ---------------------------------------------------------------- cursor


class FhirCursor(BaseModel):
    """The connector's state, kept as small JSON by the runtime."""

    model_config = ConfigDict(extra="ignore")

    watermark: datetime | None = None  # every version up to here is stored
    next: str | None = None  # the opaque link of the next Encounter page
    run_started: datetime | None = None  # the server's time of this paging run's first page
    pending: datetime | None = None  # the latest lastUpdated seen in this paging run
    seen: list[tuple[str, str, datetime]] = Field(default_factory=list)  # (id, version, updated)
    phase: Literal["encounters", "beds"] = "encounters"
    beds_next: str | None = None
    beds_at: datetime | None = None
    beds: dict[str, list[int]] = Field(default_factory=dict)  # facility: [total, O, C]

    def dump(self) -> Cursor:
        """As JSON-ready data, empty fields left out."""
        return self.model_dump(mode="json", exclude_defaults=True)


# ---------------------------------------------------------------- connector


class FhirConfig(HttpConfig):
    """Where the FHIR server is, how much to read per page and what to derive."""

    page_size: int = Field(default=200, ge=1, le=1000, description="_count per page")
    overlap_seconds: float = Field(default=60, ge=0, le=86_400)
    bed_census: bool = Field(default=True, description="Read bed Locations after encounters")
    referral_dispositions: tuple[str, ...] = Field(
        default=("other-hcf",), description="dischargeDisposition codes that mean referred out"
    )
    facility_units: dict[str, str] = Field(
        default_factory=dict, description="Organization id → commune code, overriding the source"
    )


class FhirConnector(HttpConnector):
    """Polls a hospital FHIR R4 server: Encounters incrementally, then a bed census."""

    kind = "fhir"
    title = "Bệnh viện (HIS, HL7 FHIR R4)"
    record_types = (Encounter, BedCensus)

    Config = FhirConfig
    config: FhirConfig

    def __init__(self, config: FhirConfig) -> None:
        super().__init__(config)
        self.facilities: dict[str, Facility] = {}
        self._facilities_loaded = False

    def headers(self) -> dict[str, str]:
        """Ask for FHIR JSON; a bearer token when an api_key is configured."""
        return {"Accept": FHIR_JSON, **super().headers()}

    # ------------------------------------------------------------ HTTP

    async def fetch(
        self, path_or_url: str, params: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """GET a FHIR resource; faults become typed errors carrying OperationOutcome text."""
        url = path_or_url if "://" in path_or_url else f"{self.config.base_url}{path_or_url}"
        try:
            response = await self.client.get(url, params=params)
        except httpx.TimeoutException as exc:
            raise ConnectorUnavailable(
                f"{url} timed out after {self.config.timeout_seconds:g}s"
            ) from exc
        except httpx.HTTPError as exc:
            raise ConnectorUnavailable(f"cannot reach {url}: {exc or type(exc).__name__}") from exc
        status = response.status_code
        if status >= 400:
            message = f"{url.split('?')[0]} answered HTTP {status}: {_diagnostics(response)}"
            if status in (401, 403):
                raise ConnectorAuthError(message)
            if status == 429:
                retry_after = retry_after_seconds(response.headers.get("Retry-After"))
                raise ConnectorRateLimited(message, retry_after=retry_after)
            if status >= 500:
                raise ConnectorUnavailable(message)
            raise PageGone(message) if status in (404, 410) else ConnectorError(message)
        try:
            body = response.json()
        except ValueError as exc:
            raise ConnectorError(f"{url} did not answer JSON: {response.text[:200]!r}") from exc
        if not isinstance(body, dict) or not isinstance(body.get("resourceType"), str):
            raise ConnectorError(f"{url} answered something that is not a FHIR resource")
        return body

    async def bundle(self, path_or_url: str, params: Mapping[str, Any] | None = None) -> Bundle:
        """GET a searchset Bundle."""
        body = await self.fetch(path_or_url, params)
        if body["resourceType"] != "Bundle":
            raise ConnectorError(f"expected a Bundle, got a {body['resourceType']}")
        return Bundle(body)

    async def load_facilities(self, *, force: bool = False) -> dict[str, Facility]:
        """Every Organization of the server, read once per connector instance."""
        if self._facilities_loaded and not force:
            return self.facilities
        page = await self.bundle("/Organization", {"_count": 1000})
        found = {}
        while True:
            for resource in page.resources("Organization"):
                facility = map_facility(resource)
                if facility.code:
                    found[facility.code] = facility
            if page.next is None:
                break
            page = await self.bundle(page.next)
        self.facilities, self._facilities_loaded = found, True
        return found

    async def check(self) -> None:
        """Read the CapabilityStatement and make sure the server speaks FHIR R4."""
        statement = await self.fetch("/metadata")
        version = str(statement.get("fhirVersion") or "")
        if statement["resourceType"] != "CapabilityStatement" or not version.startswith("4.0"):
            raise ConnectorError(
                f"{self.config.base_url} is not a FHIR R4 server "
                f"({statement['resourceType']}, fhirVersion {version or 'missing'})"
            )

    # ------------------------------------------------------------ polling

    async def poll(self, cursor: Cursor) -> Batch:
        """Read one page: of Encounters while the run lasts, then of bed Locations."""
        try:
            state = FhirCursor.model_validate(cursor)
        except ValidationError as exc:
            raise ConnectorError(f"unreadable cursor, reset it: {exc}") from exc
        if state.phase == "beds":
            return await self._bed_page(state)
        return await self._encounter_page(state)

    def parse(self, payload: Mapping[str, Any]) -> Record:
        """Re-map a raw Encounter with the facilities this instance has loaded."""
        return self._map(payload)

    def _map(self, resource: Mapping[str, Any]) -> Encounter:
        return map_encounter(
            resource,
            self.facilities,
            units=self.config.facility_units,
            referral_codes=frozenset(self.config.referral_dispositions),
        )

    async def _encounter_page(self, state: FhirCursor) -> Batch:
        await self.load_facilities()
        page: Bundle | None = None
        if state.next:
            try:
                page = await self.bundle(state.next)
            except PageGone:  # the server forgot the search: start the run again
                state.next = None
        if page is None:
            params: dict[str, Any] = {"_count": self.config.page_size, "_sort": "_lastUpdated"}
            if state.watermark is not None:
                since = state.watermark - timedelta(seconds=self.config.overlap_seconds)
                params["_lastUpdated"] = f"gt{_instant(since)}"
            page = await self.bundle("/Encounter", params)
            state.run_started = page.server_time or datetime.now(UTC)
        resources = page.resources("Encounter")
        if any(_reference_id(r.get("serviceProvider"), "Organization") not in self.facilities
               for r in resources):  # fmt: skip
            await self.load_facilities(force=True)  # a hospital joined since we last looked
        fresh = self._unseen(state, resources)
        state.next = page.next
        if page.next is not None:
            has_more = True
        else:  # the run is over: save the watermark, never past the run's start
            ceiling = state.run_started or datetime.now(UTC)
            state.watermark = advance_watermark(
                state.watermark, [state.pending] if state.pending else [], ceiling=ceiling
            )
            state.run_started = state.pending = None
            has_more = self.config.bed_census
            state.phase = "beds" if has_more else "encounters"
        return Batch.from_payloads(
            fresh, self._map, cursor=state.dump(), has_more=has_more, id_field="id"
        )

    def _unseen(self, state: FhirCursor, resources: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Drop versions already read in the overlap; remember this page's versions."""
        known = {(item_id, version) for item_id, version, _ in state.seen}
        fresh = []
        for resource in resources:
            key = _version_key(resource)
            if key is not None and (key[0], key[1]) in known:
                continue
            fresh.append(resource)
            if key is not None:
                state.seen.append(key)
                if state.pending is None or key[2] > state.pending:
                    state.pending = key[2]
        if state.pending is not None:
            oldest = state.pending - timedelta(seconds=self.config.overlap_seconds)
            state.seen = [entry for entry in state.seen if entry[2] >= oldest][-MAX_SEEN:]
        return fresh

    async def _bed_page(self, state: FhirCursor) -> Batch:
        await self.load_facilities()
        if state.beds_next:
            try:
                page = await self.bundle(state.beds_next)
            except PageGone:  # start the census again
                state.beds_next, state.beds = None, {}
                return await self._bed_page(state)
        else:
            page = await self.bundle(
                "/Location", {"physical-type": "bd", "_count": self.config.page_size}
            )
            state.beds_at = page.server_time or datetime.now(UTC)
            state.beds = {}
        rejected = count_beds(page.resources("Location"), state.beds)
        fetched = len(page.entries)
        if page.next is not None:
            state.beds_next = page.next
            return Batch(cursor=state.dump(), has_more=True, rejected=rejected, fetched=fetched)
        records: list[Record] = []
        measured_at = state.beds_at or datetime.now(UTC)
        for facility_id, (total, occupied, closed) in sorted(state.beds.items()):
            try:
                facility, unit_code = facility_of(
                    {"reference": f"Organization/{facility_id}"},
                    self.facilities,
                    self.config.facility_units,
                    what="managingOrganization",
                )
                records.append(
                    BedCensus(
                        external_id=f"{facility.code}:{measured_at.astimezone(LOCAL):%Y%m%dT%H%M}",
                        unit_code=unit_code,
                        source_updated_at=measured_at,
                        facility_code=facility.code,
                        facility_name=facility.name,
                        measured_at=measured_at,
                        beds_total=total,
                        beds_occupied=occupied,
                        beds_closed=closed,
                    )
                )
            except (RecordRejected, ValidationError) as exc:
                summary = {"facility": facility_id, "total": total, "O": occupied, "C": closed}
                rejected.append(Rejected(external_id=facility_id, reason=str(exc), payload=summary))
        state.phase, state.beds_next, state.beds_at, state.beds = "encounters", None, None, {}
        return Batch(
            records=records, rejected=rejected, cursor=state.dump(), has_more=False, fetched=fetched
        )


# ---------------------------------------------------------------- helpers


class PageGone(ConnectorError):
    """A paging link the server no longer knows (HTTP 404/410): search again."""


class Bundle:
    """A searchset Bundle: its entries' resources, the next link and the server's time."""

    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body
        entries = body.get("entry") or []
        self.entries = [e for e in entries if isinstance(e, Mapping)]

    def resources(self, resource_type: str) -> list[dict[str, Any]]:
        """The entries' resources of one type (OperationOutcome entries and others skipped)."""
        found = []
        for entry in self.entries:
            resource = entry.get("resource")
            if isinstance(resource, dict) and resource.get("resourceType") == resource_type:
                found.append(resource)
        return found

    @property
    def next(self) -> str | None:
        """The opaque URL of the next page, if any."""
        for link in self.body.get("link") or []:
            if isinstance(link, Mapping) and link.get("relation") == "next" and link.get("url"):
                return str(link["url"])
        return None

    @property
    def server_time(self) -> datetime | None:
        """Bundle.meta.lastUpdated: when the server ran the search."""
        try:
            return parse_fhir_time((self.body.get("meta") or {}).get("lastUpdated"), "meta")
        except RecordRejected:
            return None


def _version_key(resource: Mapping[str, Any]) -> tuple[str, str, datetime] | None:
    meta = resource.get("meta") or {}
    try:
        updated = parse_fhir_time(meta.get("lastUpdated"), "meta.lastUpdated")
    except RecordRejected:
        return None
    if not resource.get("id") or updated is None:
        return None
    return (str(resource["id"]), str(meta.get("versionId") or ""), updated)


def _instant(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _diagnostics(response: httpx.Response) -> str:
    """The OperationOutcome's diagnostics, else the start of the body."""
    try:
        body = response.json()
        issues = body.get("issue") or []
        text = "; ".join(str(i.get("diagnostics") or i.get("code")) for i in issues)
        return text or response.text[:300]
    except (ValueError, AttributeError):
        return response.text[:300]
