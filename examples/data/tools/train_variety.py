"""Training-only records for the tool-use set: parallel calls and tool lists that change from record to record.

make_tools_data.py writes train.jsonl and validation.jsonl from `variety_records`; test.jsonl keeps its own
generator (make_tools_data.record, split 1), so the held-out file does not change when this one does.

What a training record varies:
  calls      one call, or 2 to 3 in one assistant turn ("and", "also", "both", lists, comparisons): the same
             function on several values (cities, dates, conversions) or different functions in one request;
             the calls come in the order the request names them
  tools      the four functions in their usual order; the four shuffled with 1 or 2 distractors whose names
             look alike (get_forecast, get_weather_alerts, create_calendar_event, ...); or only the functions
             the request needs plus a few others. Distractors are called too when the request is theirs, so a
             call's name is read from the record's `tools`, never made up from the request's words
  missing    the request needs a function that the record's tools lack -> a reply saying so, no call
Phrasings and values come from the training side only (make_tools_data's split-0 lists and the lists below);
`check_unlike_held_out` refuses a training phrasing that shares a run of four tokens, three of them
words, with a held-out one.
"""

from __future__ import annotations

import json
import random
import re

import make_tools_data as base


def _fn(name: str, description: str, props: dict[str, tuple[str, str]]) -> dict:
    """An OpenAI function schema; every property (type, description) is required."""
    return {"type": "function", "function": {"name": name, "description": description, "parameters": {
        "type": "object", "properties": {k: {"type": t, "description": d} for k, (t, d) in props.items()},
        "required": list(props)}}}


DISTRACTORS = [
    _fn("get_forecast", "Get the weather forecast for the next days in a city.",
        {"city": ("string", "The city name."), "days": ("integer", "How many days ahead, 1 to 7.")}),
    _fn("get_weather_alerts", "List active severe-weather alerts for a city.", {"city": ("string", "The city name.")}),
    _fn("create_calendar_event", "Add an event to the user's calendar.",
        {"title": ("string", "What the event is."), "date": ("string", "The day, as YYYY-MM-DD.")}),
    _fn("convert_currency", "Convert an amount of money from one currency to another.",
        {"amount": ("number", "The amount."), "from_currency": ("string", "ISO code, e.g. EUR."),
         "to_currency": ("string", "ISO code, e.g. USD.")}),
    _fn("get_ticket_status", "Look up a support ticket by its id.", {"ticket_id": ("string", "e.g. TCK-1234.")}),
    _fn("get_local_time", "Get the current local time in a city.", {"city": ("string", "The city name.")}),
]
BASE_NAMES = [t["function"]["name"] for t in base.TOOLS]
BY_NAME = {t["function"]["name"]: t for t in base.TOOLS + DISTRACTORS}

# ---- training phrasings: single requests (added to make_tools_data's split-0 ones) ------------------------------
SINGLE = {
    "get_weather": base.WEATHER[0] + [
        "Should I take an umbrella in {city}?", "How cold is it in {city} at the moment?",
        "Is it sunny in {city}?", "Current temperature in {city}, please.", "{city} weather now?",
        "What's it like outside in {city} today?", "Is it T-shirt weather in {city}?"],
    "get_calendar_events": base.CALENDAR[0] + [
        "What does my day look like on {date}?", "Any appointments on {date}?", "Do I have plans on {date}?",
        "Which meetings are set for {date}?", "events on {date}", "Is my {date} busy?"],
    "convert_units": base.CONVERT[0] + [
        "Change {value} {from_unit} to {to_unit}.", "{value} {from_unit} in {to_unit}?",
        "How much is {value} {from_unit} when measured in {to_unit}?", "Need {value} {from_unit} in {to_unit}."],
    "open_ticket": base.TICKET[0] + [
        "{title} -- please open a ticket, {priority} priority.", "Ticket please: {title} ({priority}).",
        "Something is wrong: {title}. File it as {priority}.",
        "We have a problem, {title}. Open a ticket at {priority} priority."],
    "get_forecast": ["What will the weather be in {city} over the next {days} days?",
                     "Forecast for {city}, {days} days ahead.", "Give me the {days}-day forecast for {city}."],
    "get_weather_alerts": ["Are there any storm warnings for {city}?", "Any severe-weather alerts in {city}?"],
    "create_calendar_event": ["Add '{event}' to my calendar on {date}.", "Put {event} on {date} in my calendar."],
    "convert_currency": ["How much is {amount} {cur} in {cur2}?", "Convert {amount} {cur} to {cur2}."],
    "get_ticket_status": ["What's the status of ticket {ticket_id}?", "Is {ticket_id} resolved yet?"],
    "get_local_time": ["What time is it in {city}?", "Local time in {city}?"],
}
# ---- parallel requests: the same function on several values --------------------------------------------------------
SAME = {
    ("get_weather", 2): base.WEATHER2[0] + [
        "Weather for {city} and {city2}, please.", "I'm flying from {city} to {city2}. What's the weather in both?",
        "Check the weather in {city}. Also check {city2}.", "Is it warmer in {city} or {city2}?",
        "Which is sunnier today, {city} or {city2}?", "weather: {city}, {city2}",
        "Give me the weather for both {city} and {city2}.", "Tell me the weather in {city}, and also in {city2}."],
    ("get_weather", 3): ["What's the weather in {city}, {city2} and {city3}?",
                         "Weather check for these cities: {city}, {city2}, {city3}.",
                         "Compare the weather across {city}, {city2}, and {city3}."],
    ("get_calendar_events", 2): ["What's on my calendar on {date} and {date2}?", "Am I free on {date} or on {date2}?",
                                 "Show my events for {date}, and also for {date2}.",
                                 "Compare my calendar on {date} with {date2}."],
    ("convert_units", 2): ["Convert {value} {from_unit} to {to_unit} and {value2} {from_unit2} to {to_unit2}.",
                           "How many {to_unit} is {value} {from_unit}? Also, how many {to_unit2} is {value2} {from_unit2}?",
                           "Two conversions: {value} {from_unit} to {to_unit}, then {value2} {from_unit2} to {to_unit2}."],
}
# ---- parallel requests: different functions (placeholders as in SINGLE; a repeated function gets a 2) -----------
MIXED = {
    ("get_weather", "get_calendar_events"): [
        "What's the weather in {city}, and what's on my calendar on {date}?",
        "Check the weather in {city} and also list my events for {date}."],
    ("get_calendar_events", "get_weather"): ["Show my events for {date}. Also, is it raining in {city}?",
                                             "Am I free on {date}? And how's the weather in {city}?"],
    ("convert_units", "get_weather"): ["Convert {value} {from_unit} to {to_unit}, and tell me the weather in {city}."],
    ("open_ticket", "get_calendar_events"): [
        "Open a {priority} priority ticket: {title}. Also show my events for {date}."],
    ("get_weather", "open_ticket"): ["Weather in {city}? Also log a {priority}-priority ticket: {title}"],
    ("get_weather", "get_local_time"): ["What's the weather and the local time in {city}?"],
    ("get_weather", "get_forecast"): ["Weather in {city} now, and the {days}-day forecast too."],
    ("get_weather", "get_calendar_events", "convert_units"): [
        "Three things: the weather in {city}, my events on {date}, and {value} {from_unit} in {to_unit}."],
}

CITIES = base.CITIES[0] + ["Prague", "Jakarta", "Athens", "Manila", "Austin", "Lyon", "Chennai", "Calgary", "Dakar"]
TITLES = base.TITLES[0] + ["the scanner sends blank pages", "spreadsheet macros are disabled",
                           "chat notifications stopped", "headset microphone is muted", "backup job failed last night",
                           "the intranet search returns nothing", "new hire needs a laptop"]
CURRENCIES = ["EUR", "USD", "GBP", "JPY", "CHF", "CAD"]
MISSING = {"get_weather": "I can't check the weather: none of the tools I have here looks it up.",
           "get_calendar_events": "I can't read your calendar with the tools I have here.",
           "convert_units": "None of my tools converts units, but I can explain the conversion if you like.",
           "open_ticket": "I can't open tickets with the tools available here."}


def _values(rng: random.Random, name: str, i: int, city: str | None = None) -> tuple[dict, dict, dict, str]:
    """(placeholder values, call arguments, tool result, reply sentence) for one call; `i` > 0 suffixes the
    placeholders (city2, date2, ...) of a repeated function; `city` is the one an earlier function of the same
    request already named ("the weather and the local time in {city}")."""
    s = str(i + 1) if i else ""
    if name in ("get_weather", "get_weather_alerts", "get_local_time", "get_forecast"):
        city = city or rng.choice(CITIES)
        if name == "get_weather":
            r = {"city": city, "temperature_c": rng.randint(-5, 33), "condition": rng.choice(base.CONDITIONS)}
            return {"city" + s: city}, {"city": city}, r, f"{city}: {r['temperature_c']} °C, {r['condition']}."
        if name == "get_forecast":
            days = rng.randint(2, 7)
            return ({"city" + s: city, "days": days}, {"city": city, "days": days}, {"city": city, "days": []},
                    f"The {days}-day forecast for {city} is not available yet.")
        if name == "get_local_time":
            t = f"{rng.randint(0, 23):02d}:{rng.choice([0, 15, 30, 45]):02d}"
            return {"city" + s: city}, {"city": city}, {"time": t}, f"It's {t} in {city}."
        return {"city" + s: city}, {"city": city}, {"alerts": []}, f"There are no weather alerts for {city}."
    if name in ("get_calendar_events", "create_calendar_event"):
        date = base._date(rng, 0)
        if name == "create_calendar_event":
            ev = rng.choice(base.EVENTS)
            return ({"date" + s: date, "event": ev}, {"title": ev, "date": date}, {"created": True},
                    f"Added {ev} on {date}.")
        ev = sorted(rng.sample([(9, 0), (11, 0), (13, 0), (15, 30)], 1))[0]
        title = rng.choice(base.EVENTS)
        events = [] if rng.random() < 0.3 else [{"time": f"{ev[0]:02d}:{ev[1]:02d}", "title": title}]
        reply = (f"Nothing is scheduled on {date}." if not events else
                 f"On {date}: {title} at {events[0]['time']}.")
        return {"date" + s: date}, {"date": date}, {"date": date, "events": events}, reply
    if name == "convert_units":
        frm, to, factor = rng.choice(base.UNITS[0])
        value = base._num(rng.choice(base.VALUES[0]))
        out = round(value * factor, 2)
        return ({"value" + s: value, "from_unit" + s: frm, "to_unit" + s: to},
                {"value": value, "from_unit": frm, "to_unit": to}, {"value": out, "unit": to},
                f"{value} {frm} is about {base._num(out)} {to}.")
    if name == "convert_currency":
        cur, cur2 = rng.sample(CURRENCIES, 2)
        amount = rng.choice([10, 20, 50, 120, 300])
        return ({"amount": amount, "cur": cur, "cur2": cur2}, {"amount": amount, "from_currency": cur,
                "to_currency": cur2}, {"amount": round(amount * 1.1, 2)}, f"{amount} {cur} is about {round(amount * 1.1, 2)} {cur2}.")
    if name == "get_ticket_status":
        tid = f"TCK-{rng.randint(1000, 9999)}"
        return {"ticket_id": tid}, {"ticket_id": tid}, {"id": tid, "status": "open"}, f"{tid} is still open."
    title, priority = rng.choice(TITLES), rng.choice(base.PRIORITIES)
    tid = f"TCK-{rng.randint(1000, 9999)}"
    return ({"title": title, "priority": priority}, {"title": title, "priority": priority},
            {"id": tid, "status": "open"}, f"Ticket {tid} is open with {priority} priority.")


def _tools(rng: random.Random, needed: list[str], missing: str | None = None) -> list[dict]:
    """The record's tools: the usual four (2 in 5), the four shuffled with 1-2 distractors (3 in 10), or the
    needed functions with 1-2 others (3 in 10). `missing` is never among them; every needed one always is."""
    r = rng.random()
    if missing is None and r < 0.4 and all(n in BASE_NAMES for n in needed):
        return base.TOOLS
    others = [n for n in BY_NAME if n not in needed and n != missing]
    if r < 0.7:
        names = [n for n in BASE_NAMES if n != missing] + rng.sample([d["function"]["name"] for d in DISTRACTORS
                                                                     if d["function"]["name"] not in needed],
                                                                    rng.randint(1, 2))
        names += [n for n in needed if n not in names]
    else:
        names = list(dict.fromkeys(needed)) + rng.sample(others, rng.randint(1, 2))
    rng.shuffle(names)
    return [BY_NAME[n] for n in names]


def _request(rng: random.Random, shape: str) -> tuple[list[str], str]:
    """(function per call, text template) for a single / same / mixed request."""
    if shape == "single":
        name = rng.choice(BASE_NAMES * 3 + [d["function"]["name"] for d in DISTRACTORS])
        return [name], rng.choice(SINGLE[name])
    table = SAME if shape == "same" else MIXED
    key = rng.choice(list(table))
    names = [key[0]] * key[1] if shape == "same" else list(key)
    return names, rng.choice(table[key])


def variety_record(rng: random.Random, kind: str, shape: str, n: int, nth: int) -> dict:
    """One training record. kind: call / full / answer (as make_tools_data) / chat / missing; shape: single /
    same / mixed (ignored by chat and missing). `n` numbers the call ids, `nth` picks the chat pair."""
    if kind == "chat":
        q, a = base.CHAT[0][nth % len(base.CHAT[0])]
        return {"tools": _tools(rng, []), "messages": [{"role": "user", "content": q},
                                                        {"role": "assistant", "content": a}]}
    if kind == "missing":
        name = BASE_NAMES[nth % 4]
        fill, _, _, _ = _values(rng, name, 0)
        text = rng.choice(SINGLE[name]).format(**fill)
        return {"tools": _tools(rng, [], missing=name), "messages": [
            {"role": "user", "content": text}, {"role": "assistant", "content": MISSING[name]}]}
    names, template = _request(rng, shape)
    fill, calls, results, replies = {}, [], [], []
    for j, name in enumerate(names):
        i = names[:j].count(name)
        f, args, result, reply = _values(rng, name, i, fill.get("city") if i == 0 else None)
        fill.update(f), calls.append(base._call(n * 10 + j, name, args)), results.append(result), replies.append(reply)
    msgs = [{"role": "user", "content": template.format(**fill)},
            {"role": "assistant", "content": None, "tool_calls": calls}]
    tools = _tools(rng, names)
    if kind == "call":
        return {"tools": tools, "messages": msgs}
    msgs += [{"role": "tool", "tool_call_id": c["id"], "name": c["function"]["name"], "content": json.dumps(r)}
             for c, r in zip(calls, results)]
    return {"tools": tools, "messages": msgs + [{"role": "assistant", "content": " ".join(replies)}]}


def variety_records(seed: int, kinds: dict[tuple[str, str], int]) -> list[dict]:
    """`kinds[(kind, shape)]` records of each, shuffled with `seed`."""
    rng = random.Random(seed)
    order = [k for k, c in kinds.items() for _ in range(c)]
    rng.shuffle(order)
    return [variety_record(rng, kind, shape, n, order[:n].count((kind, shape))) for n, (kind, shape) in enumerate(order)]


def parallel_records(seed: int, kinds: dict[str, int]) -> list[dict]:
    """`kinds[kind]` records of each kind (call / full / answer) whose one assistant turn makes 2 or 3 calls to the
    same function (SAME), every one with the usual four tools in their usual order: the parallel calls of
    `variety_records` without its distractors, shuffled lists and missing functions."""
    rows = variety_records(seed, {(kind, "same"): count for kind, count in kinds.items()})
    return [{**r, "tools": base.TOOLS} for r in rows]


def _grams(template: str, k: int = 4) -> set[tuple[str, ...]]:
    """The template's runs of k tokens (words and {placeholders}) that hold at least k - 1 words."""
    words = re.findall(r"\{\w+\}|[a-z']+", template.lower())
    runs = (tuple(words[i:i + k]) for i in range(len(words) - k + 1))
    return {g for g in runs if sum(not w.startswith("{") for w in g) >= k - 1}


def check_unlike_held_out() -> None:
    """Raise if a training phrasing shares a run of 4 tokens (3 or 4 of them words) with a held-out one, or a training value (city,
    title, unit pair) is a held-out one."""
    held = [t for lists in (base.WEATHER, base.WEATHER2, base.CALENDAR, base.CONVERT, base.TICKET) for t in lists[1]]
    train = [t for ts in list(SINGLE.values()) + list(SAME.values()) + list(MIXED.values()) for t in ts]
    held_grams = set().union(*map(_grams, held))
    shared = sorted({t for t in train if _grams(t) & held_grams})
    assert not shared, f"training phrasings too close to held-out ones: {shared}"
    assert not set(CITIES) & set(base.CITIES[1]) and not set(TITLES) & set(base.TITLES[1])
    assert not {u[:2] for u in base.UNITS[0]} & {u[:2] for u in base.UNITS[1]}
