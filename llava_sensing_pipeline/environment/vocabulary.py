"""The label vocabularies, the broad keyword tables and the label synonyms, as data.

``VOCABULARY`` is what every analyzer may answer (each field includes "unknown"). ``KEYWORDS`` are the broad
whole-word keyword tables behind :func:`~llava_sensing_pipeline.environment.lexicon.label_hits`, which checks that a
generated paragraph expresses its sensor record; the rule analyzer of source passages uses the stricter scene cues of
:mod:`.cues`. ``LABEL_SYNONYMS`` are the free-form values an LLM may answer and the label each one means.
"""

from __future__ import annotations

TEMPERATURE_HINTS: tuple[str, ...] = ("cold", "cool", "mild", "warm", "hot", "unknown")
HUMIDITY_HINTS: tuple[str, ...] = ("dry", "moderate", "humid", "unknown")
WEATHERS: tuple[str, ...] = ("clear", "cloudy", "rain", "snow", "fog", "windy", "storm", "unknown")
TIMES_OF_DAY: tuple[str, ...] = ("dawn", "morning", "noon", "afternoon", "evening", "night", "unknown")
LOCATIONS: tuple[str, ...] = (
    "city_walking",
    "forest_exploration",
    "beach_walking",
    "mountain_climbing",
    "park_stroll",
    "riverside_walking",
    "field_crossing",
    "sea_voyage",
    "indoor",
    "unknown",
)
MOVEMENTS: tuple[str, ...] = ("still", "walking", "active", "unknown")
WIND_LEVELS: tuple[str, ...] = ("calm", "breeze", "strong", "unknown")

ENV_FIELDS: tuple[str, ...] = (
    "temperature_hint",
    "humidity_hint",
    "weather",
    "time_of_day",
    "location",
    "movement",
    "wind",
)
VOCABULARY: dict[str, tuple[str, ...]] = {
    "temperature_hint": TEMPERATURE_HINTS,
    "humidity_hint": HUMIDITY_HINTS,
    "weather": WEATHERS,
    "time_of_day": TIMES_OF_DAY,
    "location": LOCATIONS,
    "movement": MOVEMENTS,
    "wind": WIND_LEVELS,
}

# The context fields: the ones a training example's sensor record carries as its scene ("context").
CONTEXT_FIELDS: tuple[str, ...] = ("weather", "time_of_day", "location")

# Broad keyword tables (label_hits): label -> words. A plain word also matches its inflections (see
# ``lexicon.inflections``); a word written "=word" matches only itself; an entry with a space is a phrase
# (its words may be separated by any run of non-letters, e.g. "tea-time" matches "tea time").
TEMPERATURE_KEYWORDS: dict[str, tuple[str, ...]] = {
    "cold": ("cold", "freeze", "=froze", "=frozen", "frost", "ice", "icicle", "chill", "frigid",
             "winter", "=wintry", "shiver"),
    "cool": ("cool", "brisk", "nippy", "crisp"),
    "mild": ("mild", "temperate", "clement", "tepid", "lukewarm"),
    "warm": ("warm", "warmth", "balmy", "summer"),
    "hot": ("hot", "heat", "sultry", "swelter", "scorch", "torrid", "tropical", "sweat", "perspire"),
}
HUMIDITY_KEYWORDS: dict[str, tuple[str, ...]] = {
    "dry": ("dry", "arid", "parch", "=dusty", "drought"),
    # "moderate" humidity has no cue in prose; only the LLM analyzer can report it.
    "moderate": (),
    "humid": ("humid", "humidity", "moist", "moisture", "damp", "dank", "muggy", "clammy", "=steamy",
              "sodden", "soggy", "dew", "wet", "drench", "soak"),
}
WEATHER_KEYWORDS: dict[str, tuple[str, ...]] = {
    "clear": ("sun", "sunshine", "sunlight", "sunlit", "sunbeam", "cloudless", "clear sky", "blue sky"),
    "cloudy": ("cloud", "overcast", "grey sky", "gray sky"),
    "rain": ("rain", "drizzle", "downpour", "raindrop", "rainfall", "rainwater", "shower", "umbrella"),
    "snow": ("snow", "snowflake", "snowfall", "snowdrift", "blizzard", "sleet"),
    "fog": ("fog", "mist", "haze", "murk"),
    "windy": ("wind", "gale", "gust", "blustery", "windswept", "strong wind", "high wind"),
    "storm": ("storm", "thunder", "lightning", "tempest", "hurricane", "squall", "typhoon", "cyclone",
              "thunderstorm"),
}
TIME_KEYWORDS: dict[str, tuple[str, ...]] = {
    "dawn": ("dawn", "daybreak", "sunrise", "cockcrow", "first light", "break of day"),
    "morning": ("morning", "=morn", "forenoon", "breakfast"),
    "noon": ("noon", "midday", "noonday", "noontide", "lunch", "luncheon"),
    "afternoon": ("afternoon", "teatime", "tea time"),
    "evening": ("evening", "dusk", "twilight", "sunset", "sundown", "nightfall", "supper", "gloaming"),
    "night": ("night", "=nightly", "midnight", "nighttime", "moon", "moonlight", "moonlit", "starlight",
              "starlit", "=starry"),
}
LOCATION_KEYWORDS: dict[str, tuple[str, ...]] = {
    "city_walking": ("street", "avenue", "boulevard", "city", "town", "pavement", "sidewalk", "alley",
                     "market", "shop", "traffic", "omnibus", "tram", "plaza", "piazza", "lamppost"),
    "forest_exploration": ("forest", "=woods", "woodland", "tree", "grove", "pine", "thicket",
                           "undergrowth", "jungle", "copse", "glade"),
    "beach_walking": ("beach", "shore", "sand", "coast", "surf", "dune", "seaside", "seashore", "pebble",
                      "seaweed"),
    "mountain_climbing": ("mountain", "hill", "hillside", "climb", "peak", "summit", "slope", "ridge",
                          "crag", "cliff", "glacier", "ascent", "ascend", "precipice", "boulder", "canyon"),
    "park_stroll": ("park", "garden", "lawn", "hedge", "shrubbery", "flowerbed", "pond"),
    "riverside_walking": ("river", "riverside", "riverbank", "stream", "creek", "brook", "canal",
                          "rivulet", "towpath", "weir"),
    "field_crossing": ("field", "meadow", "pasture", "heath", "moor", "moorland", "prairie", "farmland",
                       "cornfield", "hayfield", "furrow"),
    "sea_voyage": ("sea", "ocean", "ship", "deck", "sail", "voyage", "cabin", "mast", "boat", "vessel",
                   "steamer", "helm", "hull", "anchor", "crew", "rigging", "keel", "tiller", "starboard",
                   "schooner", "yacht", "sloop", "aboard"),
    "indoor": ("room", "indoors", "parlour", "parlor", "kitchen", "hall", "hallway", "library", "chamber",
               "staircase", "stair", "corridor", "bedroom", "ceiling", "fireplace", "hearth", "mantelpiece",
               "sofa", "armchair", "chair", "carpet", "curtain", "wallpaper", "cellar", "attic", "upstairs",
               "downstairs"),
}
MOVEMENT_KEYWORDS: dict[str, tuple[str, ...]] = {
    # "still" and "rest" are left out on purpose: "still" is mostly the adverb and "rest" mostly
    # "the rest of"; their unambiguous forms are listed instead.
    "still": ("sit", "=sat", "seated", "stand", "=stood", "motionless", "stationary", "=rested",
              "=resting", "pause", "linger", "wait", "idle", "recline", "lounge"),
    "walking": ("walk", "stroll", "step", "stride", "=strode", "wander", "saunter", "amble", "tramp",
                "hike", "trudge", "footstep", "ramble", "trek", "pace"),
    "active": ("run", "=ran", "sprint", "rush", "dash", "=raced", "=racing", "gallop", "leap", "=leapt",
               "jump", "scramble", "clamber", "climb", "hurry", "swim", "=swam", "paddle", "chase"),
}
WIND_KEYWORDS: dict[str, tuple[str, ...]] = {
    "calm": ("=calm", "windless", "becalmed", "still air", "dead calm", "no wind"),
    "breeze": ("breeze", "zephyr", "wind", "light wind", "gentle wind", "soft wind", "sea breeze"),
    "strong": ("gale", "gust", "storm", "hurricane", "tempest", "squall", "typhoon", "cyclone", "whirlwind",
               "windstorm", "blustery", "strong wind", "high wind"),
}
KEYWORDS: dict[str, dict[str, tuple[str, ...]]] = {
    "temperature_hint": TEMPERATURE_KEYWORDS,
    "humidity_hint": HUMIDITY_KEYWORDS,
    "weather": WEATHER_KEYWORDS,
    "time_of_day": TIME_KEYWORDS,
    "location": LOCATION_KEYWORDS,
    "movement": MOVEMENT_KEYWORDS,
    "wind": WIND_KEYWORDS,
}

# Generated inflections that are different words in practice ("mast" -> "master", "wind" ->
# "winding", "park" -> "parking"); they are never matched unless listed as keywords themselves.
EXCLUDED_INFLECTIONS: frozenset[str] = frozenset({
    "master", "masters", "winding", "winded", "winder", "winders", "parked", "parking", "parker",
    "parkers", "waiter", "waiters", "mister", "misters", "steamer", "steamers", "streamer",
    "streamers", "dashing", "pined", "pining", "shored", "shoring", "peaked", "peaky", "hedged",
    "hedging", "brooked", "moored", "mooring", "furrowed", "decked", "dusky", "icing", "sander",
    "sanders", "ponder", "ponders", "keeled", "keeling", "jumper", "jumpers", "idly",
})

# Synonyms accepted by ``validate_labels`` (after lower-casing, with spaces/hyphens as "_").
LABEL_SYNONYMS: dict[str, dict[str, str]] = {
    "temperature_hint": {
        "freezing": "cold", "icy": "cold", "frosty": "cold", "chilly": "cool", "crisp": "cool",
        "temperate": "mild", "pleasant": "mild", "balmy": "warm", "scorching": "hot", "sweltering": "hot",
    },
    "humidity_hint": {
        "arid": "dry", "normal": "moderate", "medium": "moderate", "damp": "humid", "moist": "humid",
        "muggy": "humid", "wet": "humid",
    },
    "weather": {
        "sunny": "clear", "fair": "clear", "bright": "clear", "cloudless": "clear", "overcast": "cloudy",
        "partly_cloudy": "cloudy", "clouds": "cloudy", "rainy": "rain", "raining": "rain",
        "drizzle": "rain", "showers": "rain", "shower": "rain", "snowy": "snow", "snowing": "snow",
        "blizzard": "snow", "sleet": "snow", "foggy": "fog", "misty": "fog", "mist": "fog",
        "hazy": "fog", "haze": "fog", "wind": "windy", "breezy": "windy", "gusty": "windy",
        "stormy": "storm", "thunderstorm": "storm", "thunder": "storm",
    },
    "time_of_day": {
        "daybreak": "dawn", "sunrise": "dawn", "early_morning": "morning", "forenoon": "morning",
        "midday": "noon", "lunchtime": "noon", "late_afternoon": "afternoon", "dusk": "evening",
        "twilight": "evening", "sunset": "evening", "midnight": "night", "nighttime": "night",
        "late_night": "night",
    },
    "location": {
        "indoors": "indoor", "inside": "indoor", "city": "city_walking", "street": "city_walking",
        "town": "city_walking", "forest": "forest_exploration", "woods": "forest_exploration",
        "beach": "beach_walking", "shore": "beach_walking", "coast": "beach_walking",
        "mountain": "mountain_climbing", "mountains": "mountain_climbing", "park": "park_stroll",
        "garden": "park_stroll", "river": "riverside_walking", "riverside": "riverside_walking",
        "field": "field_crossing", "meadow": "field_crossing", "sea": "sea_voyage",
        "at_sea": "sea_voyage", "ship": "sea_voyage", "boat": "sea_voyage",
    },
    "movement": {
        "stationary": "still", "sitting": "still", "standing": "still", "resting": "still",
        "walk": "walking", "strolling": "walking", "hiking": "walking", "running": "active",
        "run": "active", "jogging": "active", "climbing": "active", "swimming": "active",
    },
    "wind": {
        "none": "calm", "still": "calm", "windless": "calm", "light": "breeze", "gentle": "breeze",
        "breezy": "breeze", "moderate": "breeze", "windy": "strong", "gusty": "strong", "gale": "strong",
        "high": "strong", "stormy": "strong",
    },
}
