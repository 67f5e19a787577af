"""Write examples/data/grpo/json/{train,heldout}.jsonl: prompts asking for a JSON object with given keys,
types and values; json_rewards.py scores the replies.

    python examples/data/grpo/make_json.py

Deterministic (random.Random(34)). A row: {"prompt": ..., "expected": {key: value}}. train: 256 prompts
over five kinds of object (person, city, book, employee, team), one wording; heldout: 64 prompts over
four other kinds (product with a decimal price, pet, flight with a boolean, planet) and another wording,
so no key set and no phrasing is shared with training.
"""

import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parent / "json"
NAMES = ["Anna", "Ben", "Carla", "Dev", "Elif", "Farid", "Greta", "Hugo", "Ines", "Jonas", "Kemal", "Lena",
         "Mateo", "Nora", "Omar", "Priya", "Quinn", "Rosa", "Sven", "Tara"]
CITIES = ["Lyon", "Porto", "Gdansk", "Kyoto", "Quito", "Perth", "Leeds", "Graz", "Turin", "Austin"]
WORDS = ["Silent", "River", "Glass", "Winter", "Garden", "Iron", "Paper", "Golden", "Night", "Stone"]
TEAMS = ["Falcons", "Tigers", "Rovers", "Comets", "Wolves", "Sharks"]
PRODUCTS = ["lamp", "kettle", "backpack", "keyboard", "umbrella", "chair"]
SPECIES = ["cat", "dog", "rabbit", "parrot", "turtle"]
PLANETS = ["Zorin", "Kepler-7b", "Aurelia", "Tessar", "Vondra"]
TYPE = {str: "string", int: "integer", float: "number", bool: "boolean"}


def person(r): return "a person named {name} who is {age} years old", {"name": r.choice(NAMES), "age": r.randint(18, 90)}
def city(r): return "the city of {city} with {population} inhabitants", {"city": r.choice(CITIES), "population": r.randint(10, 900) * 1000}
def book(r): return "the book \"{title}\" published in {year}", {"title": f"{r.choice(WORDS)} {r.choice(WORDS)}", "year": r.randint(1900, 2024)}
def employee(r): return "{name}, who works in {department} and earns {salary} a year", {"name": r.choice(NAMES), "department": r.choice(["sales", "design", "support"]), "salary": r.randint(30, 99) * 1000}
def team(r): return "the {team}, who won {wins} games", {"team": r.choice(TEAMS), "wins": r.randint(0, 40)}
def product(r): return "a {product} that costs {price} dollars", {"product": r.choice(PRODUCTS), "price": r.randint(5, 99) + 0.99}
def pet(r): return "a {species} called {pet_name} aged {age}", {"pet_name": r.choice(NAMES), "species": r.choice(SPECIES), "age": r.randint(1, 15)}
def flight(r):
    delayed = r.random() < 0.5
    return "flight {code} at gate {gate}, " + ("delayed" if delayed else "on time") + " (delayed: {delayed})", {"code": f"TL{r.randint(100, 999)}", "gate": r.randint(1, 60), "delayed": delayed}
def planet(r): return "the planet {planet}, which has {moons} moons", {"planet": r.choice(PLANETS), "moons": r.randint(0, 30)}


TRAIN_KINDS, HELDOUT_KINDS = (person, city, book, employee, team), (product, pet, flight, planet)
TRAIN_WORDING = "Reply with only a JSON object with the keys {keys} for {what}."
HELDOUT_WORDING = "Describe {what} as a JSON object. Use exactly these keys: {keys}. Output the JSON only."


def _row(rng: random.Random, kinds, wording: str) -> dict:
    what, expected = rng.choice(kinds)(rng)
    keys = ", ".join(f'"{k}" ({TYPE[type(v)]})' for k, v in expected.items())
    shown = {k: str(v).lower() if isinstance(v, bool) else v for k, v in expected.items()}
    return {"prompt": wording.format(keys=keys, what=what.format(**shown)), "expected": expected}


def rows(n_train: int = 256, n_heldout: int = 64, seed: int = 34) -> tuple[list[dict], list[dict]]:
    rng = random.Random(seed)
    return ([_row(rng, TRAIN_KINDS, TRAIN_WORDING) for _ in range(n_train)],
            [_row(rng, HELDOUT_KINDS, HELDOUT_WORDING) for _ in range(n_heldout)])


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    for name, part in zip(("train", "heldout"), rows()):
        (OUT / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part), encoding="utf-8")
        print(f"wrote {OUT / name}.jsonl ({len(part)} prompts)")
