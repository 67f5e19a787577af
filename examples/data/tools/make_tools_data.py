"""Write the tool-use dataset in OpenAI's chat shape: train.jsonl, validation.jsonl, test.jsonl.

    python examples/data/tools/make_tools_data.py [--variety | --parallel]   (deterministic: the same files every time)

test.jsonl comes from `record` below (split 1), and so do train.jsonl and validation.jsonl (split 0); with
--variety they come from train_variety.py instead, which adds parallel calls, tool lists that vary and look-alike
distractors (its docstring; measured in docs/tools.md: it did not beat the default set). --parallel writes the
default files and also train_parallel.jsonl: the 150 default training records followed by 36 that make 2 or 3
parallel calls to one function (train_variety.parallel_records: the usual four tools, no distractors), and
continue_parallel.jsonl (those 36 and the first 36 default records, for continuing a tuned run), and
validation40.jsonl, 40 records to choose a run by (the test set's mix in training-side phrasings and values).
Every test record is {"tools": [4 function schemas], "messages": [...]} and ends with the assistant turn to learn
(or, in test.jsonl, the reference): an assistant message with `tool_calls` (arguments a JSON string, as
OpenAI sends them), or a plain reply. Four kinds of record:
  call      user asks something a tool answers -> one assistant turn with tool_calls (a few ask for two
            cities' weather -> two calls)
  answer    user asks, assistant calls, the `role: tool` result comes back -> a reply built from the result
  chat      chit-chat or a question answered directly -> a reply, no call
  full      (train only) call then result then reply in one conversation: both turns are learned
  missing   (train only) the record's tools lack the function the request needs -> a reply, no call
The held-out split uses its own phrasing templates and its own values (cities, dates, ticket titles, units),
never seen in training, so a score on it measures the call format and argument copying, not recall.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

TOOLS = [
    {"type": "function", "function": {
        "name": "convert_units", "description": "Convert a quantity from one unit to another.",
        "parameters": {"type": "object", "properties": {
            "value": {"type": "number", "description": "The quantity to convert."},
            "from_unit": {"type": "string", "description": "The unit of value, e.g. kilometers."},
            "to_unit": {"type": "string", "description": "The unit to convert to, e.g. miles."}},
            "required": ["value", "from_unit", "to_unit"]}}},
    {"type": "function", "function": {
        "name": "get_calendar_events", "description": "List the user's calendar events on one day.",
        "parameters": {"type": "object", "properties": {
            "date": {"type": "string", "description": "The day, as YYYY-MM-DD."}},
            "required": ["date"]}}},
    {"type": "function", "function": {
        "name": "open_ticket", "description": "Open a support ticket.",
        "parameters": {"type": "object", "properties": {
            "title": {"type": "string", "description": "A short summary of the problem."},
            "priority": {"type": "string", "enum": ["low", "medium", "high"]}},
            "required": ["title", "priority"]}}},
    {"type": "function", "function": {
        "name": "get_weather", "description": "Get the current weather in a city.",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string", "description": "The city name, e.g. Lisbon."}},
            "required": ["city"]}}},
]

# ---- phrasing templates: (train, test) per intent; the test ones are never used for training ----------------
WEATHER = ([
    "What's the weather like in {city}?", "How's the weather in {city} right now?",
    "Is it raining in {city}?", "weather {city}", "Can you check the current weather in {city} for me?",
    "I'm heading out in {city}. What's it like outside?", "Tell me the weather in {city}.",
], [
    "Do I need a coat in {city} today?", "Quick one: current conditions in {city}?",
    "Could you look up how warm it is in {city}?",
])
WEATHER2 = (["What's the weather in {city} and in {city2}?", "Compare the weather in {city} and {city2}."],
            ["How are conditions in {city} and {city2} right now?"])
CALENDAR = ([
    "What's on my calendar on {date}?", "Do I have any meetings on {date}?", "Show my events for {date}.",
    "calendar {date}", "What am I doing on {date}?", "Am I free on {date}?",
    "List everything I have scheduled for {date}.",
], [
    "Anything booked for me on {date}?", "Could you pull up my schedule for {date}?",
    "Check my agenda on {date}, please.",
])
CONVERT = ([
    "Convert {value} {from_unit} to {to_unit}.", "How many {to_unit} is {value} {from_unit}?",
    "What is {value} {from_unit} in {to_unit}?", "{value} {from_unit} to {to_unit}",
    "Please convert {value} {from_unit} into {to_unit}.", "I have {value} {from_unit}; how much is that in {to_unit}?",
], [
    "Express {value} {from_unit} in {to_unit}, please.", "Could you turn {value} {from_unit} into {to_unit}?",
    "{value} {from_unit} equals how many {to_unit}?",
])
TICKET = ([
    "Open a {priority} priority ticket: {title}.", "Please file a ticket with {priority} priority about this: {title}.",
    "Create a support ticket, priority {priority}. Title: {title}", "New ticket ({priority}): {title}",
    "Can you open a ticket for me? {title}. Priority is {priority}.", "Log a {priority}-priority ticket: {title}",
], [
    "Raise a ticket titled \"{title}\" with {priority} priority.", "Report this as a {priority} priority issue: {title}",
    "Submit a ticket please, {priority} priority: {title}",
])

CITIES = (["Lisbon", "Oslo", "Nairobi", "Toronto", "Osaka", "Lima", "Berlin", "Madrid", "Seoul", "Cairo", "Dublin",
           "Santiago", "Vienna", "Hanoi", "Denver", "Perth", "Warsaw", "Bogota", "Helsinki", "Mumbai"],
          ["Reykjavik", "Marseille", "Quito", "Tbilisi", "Porto", "Kyoto", "Accra", "Zagreb", "Montreal", "Adelaide"])
UNITS = ([("kilometers", "miles", 0.621371), ("miles", "kilometers", 1.609344), ("kilograms", "pounds", 2.204623),
          ("pounds", "kilograms", 0.453592), ("liters", "gallons", 0.264172), ("meters", "feet", 3.280840)],
         [("inches", "centimeters", 2.54), ("feet", "meters", 0.3048), ("gallons", "liters", 3.785412),
          ("ounces", "grams", 28.349523)])
VALUES = ([2, 3, 5, 7, 10, 12, 15, 20, 25, 42, 60, 100, 1.5, 2.5, 250], [4, 8, 9, 18, 30, 75, 3.5, 0.75, 120])
TITLES = (["printer on floor 3 is jammed", "cannot log in to the VPN", "laptop battery drains in an hour",
           "email attachments fail to open", "the wifi in room 12 keeps dropping", "payroll page shows an error",
           "need access to the finance drive", "monitor flickers after lunch", "password reset link expired",
           "the projector in the boardroom has no signal", "shared calendar is not syncing",
           "keyboard is missing the E key"],
          ["coffee machine app crashes on start", "badge reader at the side door is dead",
           "the build server is out of disk space", "cannot print double-sided", "video calls freeze after ten minutes",
           "license for the design tool expired"])
PRIORITIES = ["low", "medium", "high"]
CONDITIONS = ["clear skies", "light rain", "overcast", "light snow", "sunny", "fog", "thunderstorms", "windy"]
EVENTS = ["Standup", "Design review", "Lunch with Priya", "Dentist", "1:1 with Sam", "Budget planning", "Gym",
          "Team retro", "Call with the bank", "Flight to Boston"]

CHAT = ([
    ("Hi there!", "Hello! How can I help you today?"),
    ("Thanks, that's all for now.", "You're welcome! Have a great day."),
    ("What's the capital of France?", "The capital of France is Paris."),
    ("What is 12 times 7?", "12 times 7 is 84."),
    ("Who wrote Romeo and Juliet?", "Romeo and Juliet was written by William Shakespeare."),
    ("Can you tell me a joke?", "Why did the scarecrow win an award? Because he was outstanding in his field."),
    ("How many days are in a leap year?", "A leap year has 366 days."),
    ("What does CPU stand for?", "CPU stands for central processing unit."),
    ("Good morning!", "Good morning! What can I do for you?"),
    ("What's the opposite of 'ancient'?", "The opposite of 'ancient' is 'modern'."),
    ("Spell 'necessary' for me.", "N-E-C-E-S-S-A-R-Y."),
    ("What color do you get by mixing blue and yellow?", "Mixing blue and yellow gives green."),
    ("How many legs does a spider have?", "A spider has eight legs."),
    ("Which planet is closest to the sun?", "Mercury is the planet closest to the sun."),
], [
    ("Hey, how are you doing?", "I'm doing well, thanks for asking! How can I help?"),
    ("What is the largest ocean on Earth?", "The Pacific Ocean is the largest ocean on Earth."),
    ("What is 9 plus 16?", "9 plus 16 is 25."),
    ("Thank you so much!", "You're welcome! Let me know if you need anything else."),
    ("Who painted the Mona Lisa?", "The Mona Lisa was painted by Leonardo da Vinci."),
    ("How many minutes are in two hours?", "There are 120 minutes in two hours."),
])


def _num(x: float):
    """A value as written in the text and the arguments: 5 stays 5, 2.5 stays 2.5."""
    return int(x) if float(x).is_integer() else x


def _call(i: int, name: str, args: dict) -> dict:
    return {"id": f"call_{i}", "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}


def _date(rng: random.Random, split: int) -> str:
    """Training dates fall in 2026, held-out ones in 2027 (other months too)."""
    year, months = (2026, range(1, 13)) if split == 0 else (2027, (2, 5, 8, 11))
    return f"{year}-{rng.choice(list(months)):02d}-{rng.randint(1, 28):02d}"


# intents in turn, so each split holds every tool about equally (one in nine asks for two cities' weather)
INTENTS = ["weather", "calendar", "convert", "ticket", "weather2", "calendar", "convert", "ticket", "weather"]


def _intent(rng: random.Random, split: int, kind: str):
    """(user text, [(name, args)], [result dict per call], final reply from the results) for one intent."""
    if kind in ("weather", "weather2"):
        cities = rng.sample(CITIES[split], 2)
        results = [{"city": c, "temperature_c": rng.randint(-5, 33), "condition": rng.choice(CONDITIONS)}
                   for c in cities]
        if kind == "weather":
            r = results[0]
            return (rng.choice(WEATHER[split]).format(city=cities[0]), [("get_weather", {"city": cities[0]})], results[:1],
                    f"It's {r['temperature_c']} °C with {r['condition']} in {r['city']} right now.")
        text = rng.choice(WEATHER2[split]).format(city=cities[0], city2=cities[1])
        reply = " ".join(f"{r['city']}: {r['temperature_c']} °C, {r['condition']}." for r in results)
        return text, [("get_weather", {"city": c}) for c in cities], results, reply
    if kind == "calendar":
        date = _date(rng, split)
        events = [{"time": f"{h:02d}:{m:02d}", "title": t} for (h, m), t in
                  zip(sorted(rng.sample([(9, 0), (9, 30), (11, 0), (13, 0), (15, 30), (17, 0)], 2)), rng.sample(EVENTS, 2))]
        if rng.random() < 0.25:
            events = []
        reply = (f"You have nothing scheduled on {date}." if not events else
                 f"On {date} you have " + " and ".join(f"{e['title']} at {e['time']}" for e in events) + ".")
        return (rng.choice(CALENDAR[split]).format(date=date), [("get_calendar_events", {"date": date})],
                [{"date": date, "events": events}], reply)
    if kind == "convert":
        frm, to, factor = rng.choice(UNITS[split])
        value = _num(rng.choice(VALUES[split]))
        out = round(value * factor, 2)
        return (rng.choice(CONVERT[split]).format(value=value, from_unit=frm, to_unit=to),
                [("convert_units", {"value": value, "from_unit": frm, "to_unit": to})],
                [{"value": out, "unit": to}], f"{value} {frm} is about {_num(out)} {to}.")
    title, priority = rng.choice(TITLES[split]), rng.choice(PRIORITIES)
    ticket = f"TCK-{rng.randint(1000, 9999)}"
    return (rng.choice(TICKET[split]).format(title=title, priority=priority),
            [("open_ticket", {"title": title, "priority": priority})], [{"id": ticket, "status": "open"}],
            f"Done: ticket {ticket} is open with {priority} priority.")


def record(rng: random.Random, split: int, kind: str, n: int, nth: int) -> dict:
    """The `nth` record of its kind; `n` counts the split's records that call a tool (picks the intent)."""
    if kind == "chat":
        q, a = CHAT[split][nth % len(CHAT[split])]
        return {"tools": TOOLS, "messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
    text, calls, results, reply = _intent(rng, split, INTENTS[n % len(INTENTS)])
    call_msg = {"role": "assistant", "content": None,
                "tool_calls": [_call(n * 10 + j, name, args) for j, (name, args) in enumerate(calls)]}
    msgs = [{"role": "user", "content": text}, call_msg]
    if kind == "call":
        return {"tools": TOOLS, "messages": msgs}
    msgs += [{"role": "tool", "tool_call_id": c["id"], "name": c["function"]["name"], "content": json.dumps(r)}
             for c, r in zip(call_msg["tool_calls"], results)]
    return {"tools": TOOLS, "messages": msgs + [{"role": "assistant", "content": reply}]}


def split_records(seed: int, split: int, kinds: dict[str, int]) -> list[dict]:
    rng = random.Random(seed)
    order = [k for k, c in kinds.items() for _ in range(c)]
    rng.shuffle(order)
    return [record(rng, split, kind, n - order[:n].count("chat"), order[:n].count(kind))
            for n, kind in enumerate(order)]


def main() -> None:
    if "--variety" in sys.argv[1:]:  # the varied training set (docs/tools.md: measured, and not better)
        from train_variety import check_unlike_held_out, variety_records  # parallel calls, tool lists that vary

        check_unlike_held_out()
        # 137 train: single calls, parallel calls (same function on 2-3 values, or different functions), call +
        # result + reply, replies from a given result, no-call chats, requests whose function the tools lack
        train = variety_records(1, {("call", "single"): 35, ("call", "same"): 25, ("call", "mixed"): 18,
                                    ("full", "single"): 12, ("full", "same"): 8, ("full", "mixed"): 6,
                                    ("answer", "single"): 6, ("answer", "same"): 3, ("answer", "mixed"): 3,
                                    ("chat", ""): 16, ("missing", ""): 5})
        validation = variety_records(2, {("call", "single"): 2, ("call", "same"): 1, ("call", "mixed"): 1,
                                         ("answer", "single"): 1, ("answer", "same"): 1, ("chat", ""): 2})
    else:
        # 150 train: 70 calls, 45 call+result+reply, 15 replies from a given result, 20 without a call
        train = split_records(1, 0, {"call": 70, "full": 45, "answer": 15, "chat": 20})
        validation = split_records(2, 0, {"call": 4, "answer": 2, "chat": 2})
    # 40 held-out: 28 need a call, 6 answer from a tool result, 6 need no call (all in held-out phrasings/values)
    test = split_records(3, 1, {"call": 28, "answer": 6, "chat": 6})
    files = [("train", train), ("validation", validation), ("test", test)]
    if "--parallel" in sys.argv[1:] and "--variety" not in sys.argv[1:]:
        from train_variety import check_unlike_held_out, parallel_records

        check_unlike_held_out()
        # 36 more: 24 parallel calls, 8 parallel calls + results + reply, 4 replies from parallel results
        parallel = parallel_records(4, {"call": 24, "full": 8, "answer": 4})
        files.append(("train_parallel", train + parallel))
        # a short continuation of a tuned run: the 36 parallel ones and 36 default records replayed
        files.append(("continue_parallel", parallel + train[:36]))
        # 40 for choosing between runs (validation.jsonl's 8 hold no parallel call): the test set's mix from the
        # training side's phrasings and values (split 0), so never a held-out phrasing, city, title or unit pair
        files.append(("validation40", split_records(5, 0, {"call": 28, "answer": 6, "chat": 6})))
    for name, rows in files:
        with open(HERE / f"{name}.jsonl", "w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        print(f"{name}.jsonl: {len(rows)} records")


if __name__ == "__main__":
    main()
