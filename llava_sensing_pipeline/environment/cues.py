"""The rule analyzer's scene cues, as data: which words, in which immediate context, are evidence for a label.

A cue is written ``"PREFIX <trigger|trigger> SUFFIX"``: one of the trigger words, preceded by words matching the
regular expression PREFIX and followed by words matching SUFFIX (either may be empty). PREFIX and SUFFIX are read
over the passage lower-cased with every run of non-letters as one space, so ``"the sun (?:was )?<setting>"`` matches
"The sun was setting" and "the sun, setting". Triggers are exact words (no inflections are generated: each form is
listed). A cue starting with ``!`` is read even after a negation ("not a breath of <wind>" is a cue for calm air).

Each cue has a weight. A field's label is the one its cues support, when their weights add up to the field's
``THRESHOLD`` (one cue of weight 2 is enough for most fields; cues of weight 1 need company), see :mod:`.rules`.
A cue of weight 0 is a veto: where it matches, that occurrence of the trigger is no evidence for that field at all
("good <night>" is a farewell, "<evening> dress" is a garment).

Whatever the cue, an occurrence of a trigger never counts when it is (see ``rules``): part of a hyphenated
compound ("sun-bonnet", "rain-coat"), capitalised inside a sentence or in an all-capitals heading (a name:
"Mr. Frost", "Estes Park", "the Evening Post"), inside quotation marks (dialogue), negated ("no rain"), in a
simile ("like a storm"), or in a sentence that is not the narrated scene: conditional, future, habitual, remembered
or general ("if it rained", "every evening", "he remembered the snow").
"""

from __future__ import annotations

Cue = tuple[str, float]

WEATHER_CUES: dict[str, tuple[Cue, ...]] = {
    "clear": (
        ("<sunshine|sunny>", 2),
        ("<sunlight|sunlit>", 1),
        ("<sun> (?:was |had been )?(?:shone|shining|shines|blazed|blazing|beat|beating|poured|pouring|streamed|"
         "streaming|glared|glaring|burned|burning|broke out|came out|sparkled|glittered)", 2),
        ("(?:hot|blazing|burning|scorching|bright|brilliant|glaring) <sun>", 2),
        ("(?:blue|cloudless|clear|bright|unclouded|azure|serene) <sky|skies>", 2),
        ("<sky|skies> (?:was|were) (?:[a-z]+ )?(?:[a-z]+ )?(?:[a-z]+ )?(?:blue|cloudless|clear|bright|unclouded|"
         "serene)", 2),
        ("<cloudless|unclouded>", 2),
        ("<fine|bright|glorious|sunny|fair|lovely|brilliant|perfect> (?:day|morning|afternoon|weather)", 2),
        ("<starlight|starlit|starry|moonlight|moonlit>", 1),
        ("(?:in|by) the (?:bright |full |clear )?<moonlight|starlight>", 2),
        ("(?:weather |day |afternoon |morning |sky )?(?:had )?<faired|cleared|brightened> up", 2),
        ("(?:clear|pure|bright|sparkling|transparent|crystal) <air|atmosphere>", 2),
    ),
    "cloudy": (
        ("<overcast|cloudy|sunless|leaden>", 2),
        ("(?:grey|gray|dull|heavy|leaden|low|dark|lowering|sullen|murky) <sky|skies|clouds>", 2),
        ("<sky|skies> (?:was |were )?(?:grey|gray|dull|overcast|leaden|dark|cloudy|clouded)", 2),
        ("<clouds> (?:covered|hung|gathered|obscured|hid|thickened|solidified|passed|were gathering|rolled)", 2),
        ("<clouds>(?! of)", 0.5),
    ),
    "rain": (
        ("<raining|rained|rainy|drizzling|drizzle|downpour>", 2),
        ("<rain> (?:was |had )?(?:fell|falling|fallen|poured|pouring|beat|beating|came|coming|began|descended|pelted|"
         "pelting|streamed|streaming|drove|driving|lashed|continued|dripped|dripping)", 2),
        ("(?:in|through|under|out of) the <rain>", 2),
        ("(?:heavy|pouring|driving|steady|fine|cold|soft|drenching|torrential|pelting|thick) <rain>", 2),
        ("<rain>(?! of)", 1),
        ("<showers|shower>(?! of)", 0.5),
    ),
    "snow": (
        ("<snowing|snowed|snowstorm|snowflakes|sleet>", 2),
        ("<snow> (?:was |had )?(?:fell|falling|fallen|began|came|coming|lay|lying|drifted|drifting|covered|"
         "whirled)", 2),
        ("(?:in|through|across|over|on) the <snow>", 2),
        ("(?:deep|fresh|falling|new|soft|thick|hard|frozen|trodden) <snow>", 2),
        ("<snow>(?! of)", 0.5),
    ),
    "fog": (
        ("<fog|foggy>", 2),
        ("(?:thick|dense|heavy|white|grey|gray|cold|damp|drifting|rolling) <mist|haze>", 2),
        ("<mist|haze> (?:was |had )?(?:hung|lay|rose|covered|hid|veiled|shrouded|closed|thickened|enveloped|"
         "drifted|rolled|filled)", 2),
        ("<mist|misty|mists>", 1),
    ),
    "windy": (
        ("<gale|gales|gusty|blustery|blustering|windy>", 2),
        ("(?:high|strong|stiff|fresh|cold|keen|bitter|biting|violent|fierce|howling|piercing|furious|boisterous|"
         "rising|roaring|raw) <wind|winds|breeze>", 2),
        ("<wind> (?:was |had )?(?:blew|blowing|howled|howling|roared|roaring|whistled|whistling|rose|rising|"
         "shrieked|shrieking|tore|swept|sweeping|increased|increasing|freshened|moaned|moaning|buffeted)", 2),
        ("<blowing|blew> (?:hard|a gale|fresh|strong|great guns)", 2),
        ("<gust|gusts>", 1),
        ("<wind>", 0.5),
    ),
    "storm": (
        ("<thunder|thunderstorm|thunderclap|thunderclaps>", 2),
        ("<lightning>", 1),
        ("(?:a|the) <storm|tempest|hurricane|blizzard|typhoon|cyclone|squall>(?! of)", 1),
        ("<stormy>", 1),
        ("(?:the|a) <storm|gale|wind|tempest> (?:raged|was raging|burst|broke)", 2),
    ),
}

TIME_CUES: dict[str, tuple[Cue, ...]] = {
    "dawn": (
        ("<dawn|daybreak|sunrise|cockcrow|dawning>(?! on| upon)", 2),
        ("first <light>", 2),
        ("<break> of day", 2),
        ("(?:the )?<sun> (?:was |had )?(?:just |already |now |slowly )?(?:rose|rising|risen|came up|coming up|up)",
         2),
        ("the east (?:was |grew )?<paling|pale|reddening>", 2),
    ),
    "morning": (
        ("<morning|forenoon|mornings>", 1),
        ("(?:this|that|the same|next|the next|one|in the|early in the|early|all the|during the|a fine|a bright|"
         "a cold|a grey|a gray|late in the|the following|good|yesterday|on the) <morning>", 2),
        ("<morning> (?:came|broke|was|sun|air|light|mist|found)", 1.5),
        ("(?:at|after|before|over|to|for|took|had|eat|ate|eating|our|my|his|her|their|a) <breakfast>", 2),
        ("<morning|mornings> (?:dress|coat|paper|papers|glories|glory|star|room|call|calls|of (?:his|her|my|their|our|"
         "life))", 0),
    ),
    "noon": (
        ("<noon|midday|noonday|noontide>", 2),
        ("(?:at|over|to|for|our|my|his|her|their|had|took) <luncheon|lunch>", 2),
        ("after <luncheon|lunch|noon|midday>", 0),
    ),
    "afternoon": (
        ("<afternoon>", 2),
        ("after <luncheon|lunch|noon|midday>", 2),
        ("<afternoon> (?:tea|dress|call|calls|of (?:his|her|my|their|our) life)", 0),
    ),
    "evening": (
        ("<evening|dusk|twilight|nightfall|sundown|sunset|gloaming>", 2),
        ("(?:the )?<sun> (?:was |had )?(?:just |already |now |slowly )?(?:setting|set|sank|sinking|sunk|went down|"
         "going down|gone down|low)", 2),
        ("(?:at|after|over|to|for|our|my|his|her|their|had|took) <supper>", 2),
        ("<evening> (?:dress|dresses|clothes|coat|paper|papers|post|star|gown|gowns|party|of (?:his|her|my|their|our) "
         "life)", 0),
        ("good <evening>", 2),
        ("(?:grew|growing|getting|was growing|was getting|had grown|darkened|darkening) (?:very |quite |rather )?"
         "<dark|darker|dusky>", 2),
        ("<evening> (?:shadows|shades|glow|light)", 2),
    ),
    "night": (
        ("<night|nights>", 1),
        ("(?:at|by|that|this|all|the same|one|last|next|the next|during the|in the|of the|dead of|through the|"
         "a dark|a cold|a clear|a starry|the whole|late at|to) <night>", 2),
        ("<midnight|nighttime|tonight>", 2),
        ("<moonlight|moonlit|starlight|starlit>", 2),
        ("after <dark>", 2),
        ("(?:it was|it is|was now|was already) (?:now |quite |already |very )?<dark>", 1.5),
        ("(?:the )?<moon> (?:was |had )?(?:shone|shining|rose|risen|rising|up|bright|full|came out)", 2),
        ("(?:the )?<moon|stars>", 0.5),
        ("good <night>", 0),
        ("<night> (?:cap|gown|dress|shirt|light|lamp|mare|watch)", 0),
    ),
}

LOCATION_CUES: dict[str, tuple[Cue, ...]] = {
    "indoor": (
        ("(?:in|into|across|round|about|through|out of|entered|up and down|left|at the door of|corner of|of) "
         "(?:the|my|his|her|our|their|a|this|that) (?:little |small |large |big |dark |front |back |upper |next |"
         "own |sitting |drawing |dining |living |long |low |best |spare |inner |bare |empty |cold |warm )?"
         "<room|rooms>", 2),
        ("<room|rooms>(?! for| to| enough)", 1),
        ("(?:drawing|dining|living|sitting|dressing|bed|ball|waiting|reading|smoking|school|music|breakfast|"
         "billiard|state|front|back|spare|inner|outer|upper|common|coffee|private|morning|day|sick|box|lumber) "
         "<room|rooms>", 2.5),
        ("<parlour|parlor|kitchen|bedroom|bedrooms|drawingroom|salon|saloon|library|pantry|corridor|staircase|"
         "hallway|cellar|attic|nursery|compartment|bedchamber|scullery|vestibule|lobby|ballroom|restaurant|"
         "cafe|inn|tavern|bar|chapel|church|cathedral|theatre|theater|museum|gallery|studio|office|shop|hotel|cabin|"
         "hut|tent|indoors|interior|upstairs|downstairs|stairs|landing|audience|stage|barmaid|waiter|footman|"
         "salle>", 1),
        ("(?:in|into|inside|within|entered|interior of|inside of) (?:the|a|an|this|that|his|her|my|our|their) "
         "(?:[a-z]+ )?<house|hotel|inn|church|"
         "cathedral|chapel|theatre|theater|museum|gallery|shop|office|cabin|hut|tent|tavern|restaurant|cafe|"
         "saloon|compartment|train|kitchen|parlour|parlor|bedroom|library|hall|studio|cottage|barn|stable|prison|"
         "palace|castle|villa|room|rooms>", 2.5),
        ("<sofa|sofas|armchair|armchairs|couch|chair|chairs|carpet|carpets|curtain|curtains|fireplace|hearth|"
         "mantelpiece|mantel|mantelshelf|grate|bed|beds|pillow|pillows|washstand|wallpaper|ceiling|ceilings|"
         "table|tables|tray|cupboard|sideboard|bookcase|piano|candle|candles|doorway|"
         "stove|saucer|soup|knob>", 0.5),
        ("(?:by|before|round|near|beside|at) the <fire|fireside|hearth|window|table|piano|stove>", 1.5),
        # "A character looking out of a window is indoor, whatever the view" (the guide): outweighs the view.
        ("(?:sat|sitting|seated|stood|standing|leaned|leaning|looked|looking|gazed|gazing|watched|watching) "
         "(?:out )?(?:at|by|through|from|out of|in) (?:the|a|her|his|an|my) (?:open |little |drawing room |"
         "bedroom )?<window|windows>", 5),
        ("(?:in|into|out of|from|to|kept his|kept her|kept to his|kept to her) (?:his |her |my |their |the )?<bed>",
         1.5),
        ("<indoors>", 2),
        ("(?:to|into|from|in) the (?:[a-z]+ )?<pantry|kitchen|parlour|parlor|bedroom|cellar|attic|nursery|scullery|"
         "library|bedchamber|ballroom|saloon|salon|studio>", 2.5),
        ("(?:on|down|up|at the top of|at the foot of|at the head of|descended|ascended|climbed|mounted) the "
         "(?:[a-z]+ )?<staircase|stairs|stair>", 2.5),
        ("(?:went|came|ran|go|going|hurried|crept|climbed|stepped|led|carried|taken|took|sent) <upstairs|downstairs>",
         2.5),
        ("<compartment|compartments>", 2.5),
        # Inside a train, or in a cabin below deck, is indoor whatever the country or sea outside (the guide).
        ("(?:in|into|inside|within|entered|left) (?:the|a|an|our|my|his|her|their) (?:[a-z]+ )?<compartment|"
         "compartments|train>", 5),
        ("(?:in|into) (?:the|a|an|our|my|his|her|their) (?:[a-z]+ )?<cabin|saloon> (?:below|of the)", 5),
    ),
    "city_walking": (
        ("(?:of|down|up|along|across|through|into|in) (?:a|the) (?:[a-z]+ )?<street|streets|avenue|boulevard|"
         "square|piazza|marketplace|alley|lane>", 2),
        ("<street|streets|avenue|boulevard|pavement|pavements|sidewalk|piazza|plaza|marketplace|lamppost|"
         "lampposts|thoroughfare|alley|alleys|quay|quays|quayside|gutter|cobbles|cobblestones>", 1.5),
        ("(?:in|into|through|along|across|down|up|crossed|across) the <street|streets|square|town|city|village|"
         "market|piazza|marketplace>", 2),
        ("<town|towns|city|cities|village|hamlet|suburbs|suburb|square|market|shops|crowd|crowds|traffic|omnibus|"
         "tram|cab|cabs|houses|bridge>", 0.5),
    ),
    "forest_exploration": (
        ("<forest|forests|woods|woodland|jungle|thicket|thickets|undergrowth|copse|glade|glades|grove|groves|"
         "brushwood|bush|underwood>", 1.5),
        ("(?:under|among|amongst|between|beneath|through|into|in|inside|within|entered) the (?:[a-z]+ )?<trees|pines|"
         "oaks|firs|beeches|wood|"
         "chestnuts|forest|woods>", 2),
        ("<trees|pines|oaks|firs|beeches|chestnuts|foliage|branches|boughs|moss|ferns|leaves|trunks>", 0.5),
    ),
    "beach_walking": (
        ("<beach|beaches|sands|seashore|seaside|surf|shingle|dunes|foreshore>", 1.5),
        ("(?:on|along|to|from|at) the <shore|strand|beach|sand|sands>", 2),
        ("<shore|bathers|pebbles|rockpool|tide>", 0.5),
    ),
    "mountain_climbing": (
        ("<mountain|mountains|mountainside|summit|summits|peak|peaks|ridge|ridges|glacier|glaciers|precipice|"
         "precipices|crag|crags|canyon|canyons|gulch|crater|slope|slopes|hillside|hillsides|ascent|descent|"
         "cliffs|cliff|col|scree|gorge|ravine|pass|heights|range|ranges|hills|hill|valley|valleys|rocks|boulders>",
         0.5),
        ("(?:up|down|over|on|onto|to|top of|brow of|side of|foot of|climbed|ascended|descended|crossed|scaled|"
         "reached|along) the <hill|hills|mountain|mountains|slope|slopes|ridge|pass|summit|peak|hillside|"
         "mountainside|crater|glacier|canyon|gulch|gorge|ravine|descent|ascent|heights|col>", 2),
        ("<mountain> (?:road|path|side|top|trail|pass|track)", 2),
        ("(?:in|into|inside|across|down|up|within|of) the (?:[a-z]+ )?<crater|craters>", 2.5),
    ),
    "park_stroll": (
        ("<park|garden|gardens|lawn|lawns|shrubbery|flowerbed|flowerbeds|churchyard|cemetery|orchard|arbour|"
         "arbor|terrace|gravel|avenue>", 1),
        ("(?:in|into|through|across|round|down|up|along|to|from|out of) the (?:[a-z]+ )?(?:[a-z]+ )?<garden|gardens|"
         "park|lawn|churchyard|cemetery|shrubbery|orchard|grounds>", 2.5),
    ),
    "riverside_walking": (
        ("<river|rivers|riverside|riverbank|towpath|canal|canals|weir|stream|streams|brook|creek|lake|lakes|"
         "ferry|barge|barges|canoe|canoes|punt|backwater>", 1),
        ("(?:on|along|down|up|across|by|beside|to|crossed|into|of) the <river|canal|stream|lake|bank|banks|"
         "towpath|brook|creek|weir>", 2),
        ("<paddled|paddling|paddle|rowed|rowing|oars|oar|current|rapids>", 0.5),
    ),
    "field_crossing": (
        ("<field|fields|meadow|meadows|pasture|pastures|moor|moors|moorland|heath|heather|plain|plains|prairie|"
         "prairies|farmland|cornfield|cornfields|hayfield|stubble|downs|wheat|corn|vineyard|vineyards|"
         "countryside|lane|lanes|hedge|hedges|hedgerow|farm|farms>", 1),
        ("(?:in|into|across|through|over|along|crossed|of|on) the <field|fields|meadow|meadows|plain|plains|moor|"
         "heath|prairie|fields|lane|highroad|highway>", 1.5),
        ("<field> of (?:vision|view|battle|action|enquiry|inquiry|research|study|labour|labor)", 0),
    ),
    "sea_voyage": (
        ("<deck|decks|aboard|helm|rigging|mainsail|mainmast|foremast|forecastle|quarterdeck|bowsprit|tiller|"
         "sloop|schooner|yacht|steamer|steamship|ship|vessel|voyage|sail|sails|hull|keel|anchor|harbour|harbor|"
         "crew|mate|captain|sea|seas|ocean|waves|wave|billows|swell|spray|reef|reefs|bow|bows|stern|astern|aft|"
         "leeward|windward|lee|starboard|port|berth|mast|masts|cabin|galley|boat|boats>", 0.5),
        ("(?:on|upon|from) <deck>", 2),
        ("(?:on|went on|came on|was on|were on) <board>", 2),
        ("<aboard>", 1),
        ("at <sea>", 2.5),
        ("(?:over|across|upon|on|to) (?:the )?<sea|ocean>(?! of)", 1.5),
        ("(?:the )?<sea> (?:was |ran )?(?:rough|calm|high|heavy|smooth|running|rose|broke|breaking)", 1.5),
        ("(?:the|our|my|her|his) <ship|vessel|sloop|schooner|yacht|steamer|craft>", 1),
        ("<lashed|hove|tacked|anchored|sailed|sailing|steered|steering|reefed|luffed>", 1),
    ),
}

# Movement: what the focal people do, so a verb counts fully only with a personal pronoun as its subject ("she sat",
# "we had climbed"); the verb alone ("sheep were browsing", "the land lay waste") is weak evidence.
_SUBJECT = ("(?:i|we|he|she|they) (?:had |was |were |then |now |also |soon |again |both |all |slowly |quickly |"
            "presently |at once |at last |once more )?")
_STILL = ("sat|seated|lay|leaned|leaning|reclined|knelt|slept|dozed|lounged|waited|rested|perched|stood|sitting|lying|"
          "kneeling|sleeping|waiting|standing|resting")
_WALKING = ("walked|strolled|wandered|paced|marched|sauntered|trudged|tramped|ambled|limped|plodded|strode|stepped|"
            "walking|strolling|wandering|pacing|marching|sauntering|trudging|tramping|limping|plodding|striding")
_ACTIVE = ("ran|raced|sprinted|climbed|scrambled|clambered|rode|galloped|cantered|trotted|rowed|paddled|swam|danced|"
           "leapt|leaped|jumped|dug|chopped|skated|hauled|heaved|hurried|rushed|dashed|waded|hiked|running|climbing|"
           "scrambling|clambering|riding|galloping|rowing|paddling|swimming|"
           "dancing|leaping|jumping|digging|chopping|skating|hauling|heaving|hurrying|rushing|wading|hiking")
MOVEMENT_CUES: dict[str, tuple[Cue, ...]] = {
    "still": (
        (f"{_SUBJECT}<{_STILL}>", 2),
        (f"<{_STILL}|asleep|motionless>", 0.5),
    ),
    "walking": (
        (f"{_SUBJECT}<{_WALKING}>", 2),
        ("(?:went|came|set out|set off|started|go) (?:out )?(?:for a |on )?<walk|stroll|foot>", 2),
        (f"<{_WALKING}|footsteps>", 0.5),
    ),
    "active": (
        (f"{_SUBJECT}<{_ACTIVE}>", 2),
        (f"<{_ACTIVE}>", 0.5),
    ),
}

# What the air or place of a scene can be said to be hot or cold about ("the room was stifling", "it was cold").
_AMBIENT = ("(?:it|air|weather|day|night|morning|evening|afternoon|wind|breeze|room|rooms|water|sun|sand|place|town|"
            "compartment|cabin|carriage|house|hut|hall|church|kitchen|street|streets|valley|plain|deck|sea|climate)")
_DEGREE = "(?:very |bitterly |intensely |so |as |too |rather |quite |pleasantly |delightfully |terribly |fearfully |"\
          "extremely |piercingly |already |still |now |getting |growing )?"
TEMPERATURE_CUES: dict[str, tuple[Cue, ...]] = {
    "cold": (
        ("<freezing|frozen|frost|frosty|icy|wintry|bitterly>", 1),
        (f"{_AMBIENT} (?:was|felt|grew|became|had become|is|turned|had grown) {_DEGREE}<cold|freezing|icy|raw>", 2),
        ("(?:below|under) <zero>", 2),
        ("degrees of <frost>", 2),
        ("<cold|freezing|icy|bitter|raw|frosty|wintry|chill|biting> (?:air|wind|winds|breeze|night|nights|morning|"
         "evening|day|weather|rain|sleet|fog|mist|blast|room|dawn)", 2),
        ("(?:the|bitter|intense|piercing|severe|great) <cold>(?! of| look| eyes| manner| voice)", 1.5),
        ("<shivering|shivered|shiver|numb> (?:with|from) (?:the )?cold", 2),
    ),
    "cool": (
        ("<chilly|nippy|crisp>", 1),
        (f"{_AMBIENT} (?:was|felt|grew|became|is|turned|had grown) {_DEGREE}<cool|chilly>", 2),
        ("<cool|chilly|chill|crisp|fresh> (?:air|wind|breeze|night|morning|evening|day|weather|shade|dawn)", 2),
        ("(?:the )?<coolness|chill> of the (?:air|night|morning|evening|shade)", 2),
    ),
    "mild": (
        ("<mild|temperate|balmy|soft> (?:air|weather|day|night|morning|evening|breeze|wind|climate)", 2),
        ("(?:it|air|weather|day|night|morning|evening) (?:was|felt|is) (?:very |pleasantly |so |quite )?<mild|"
         "temperate>", 2),
    ),
    "warm": (
        ("<warm|warmer|balmy> (?:air|wind|breeze|night|nights|morning|evening|day|days|weather|sun|sunshine|room|"
         "afternoon|rain|climate)", 2),
        (f"{_AMBIENT} (?:was|felt|grew|became|is|turned|had grown) {_DEGREE}(?:[a-z]+ and )?<warm|warmer>", 2),
        ("(?:the )?<warmth> of the (?:sun|air|fire|room|day|afternoon)", 2),
    ),
    "hot": (
        ("<sweltering|scorching|stifling|sultry|broiling|baking|blistering|torrid|roasting>", 2),
        ("(?:the|great|intense|terrible|oppressive|fierce|burning|blazing|tropical|noonday|midday) <heat>"
         "(?! of (?:the )?(?:battle|moment|argument|passion|debate|discussion))", 2),
        ("<heat> (?:was|of the (?:day|sun|afternoon|noon|room|plain|plains))", 2),
        ("<heat> (?:being|was|is|grew|became) (?:very |so |too |quite |terribly |intensely )?(?:great|intense|"
         "oppressive|terrible|fearful|excessive|overpowering|tremendous)", 2),
        ("<heat>", 1),
        ("<hot|hotter|hottest> (?:air|wind|winds|breeze|night|nights|morning|evening|day|days|weather|sun|"
         "sunshine|room|afternoon|afternoons|noon|plain|plains|sand|sands|dust|climate|season)", 2),
        (f"{_AMBIENT} (?:was|felt|grew|became|is|turned|had grown) {_DEGREE}(?:burning |blazing )?<hot|hotter>", 2),
        ("<sweating|perspiring|perspiration|sweat>", 1),
    ),
}

HUMIDITY_CUES: dict[str, tuple[Cue, ...]] = {
    "dry": (
        ("<dry|arid|parched|dusty> (?:air|wind|heat|weather|plain|plains|desert|country|season|ground|road|roads)",
         2),
        ("<arid|parched|drought>", 1),
    ),
    "humid": (
        ("<damp|humid|moist|muggy|dank|steamy|clammy|sodden|wet|sticky> (?:air|night|nights|morning|evening|"
         "day|days|weather|heat|mist|fog|atmosphere|ground|grass|leaves|earth|climate|wind)", 2),
        ("<humidity|humid|muggy|dank|clammy|steamy|dew|dewy>", 1),
        ("<wet|soaked|drenched> (?:through|to the skin)", 2),
    ),
}

WIND_CUES: dict[str, tuple[Cue, ...]] = {
    "calm": (
        ("<windless|becalmed|calms>", 2),
        ("!(?:no|not a|not a breath of|without a|without) <wind|breeze|breath>", 2),
        ("(?:dead|flat|perfect|complete|absolute) <calm>", 2),
        ("(?:the )?<air> (?:was )?(?:still|motionless|windless)", 2),
    ),
    "breeze": (
        ("<breeze|breezes|zephyr>", 1),
        ("(?:light|gentle|soft|faint|slight|cool|warm|evening|morning|sea|summer|fair|little) <breeze|wind|winds|"
         "airs|air>", 2),
        ("<breezy>", 2),
    ),
    "strong": (
        ("<gale|gales|gusty|blustery|blustering|whirlwind|hurricane|tempest|squall|squalls>", 2),
        ("(?:high|strong|stiff|fresh|violent|fierce|howling|furious|boisterous|roaring|heavy|rising) <wind|winds|"
         "breeze>", 2),
        ("<wind> (?:was |had )?(?:blew|blowing|howled|howling|roared|roaring|whistled|whistling|shrieked|"
         "shrieking|tore|increased|increasing|freshened)", 2),
        ("<blowing|blew> (?:hard|a gale|fresh|strong|great guns)", 2),
        ("<gust|gusts>", 1),
    ),
}

CUES: dict[str, dict[str, tuple[Cue, ...]]] = {
    "temperature_hint": TEMPERATURE_CUES,
    "humidity_hint": HUMIDITY_CUES,
    "weather": WEATHER_CUES,
    "time_of_day": TIME_CUES,
    "location": LOCATION_CUES,
    "movement": MOVEMENT_CUES,
    "wind": WIND_CUES,
}

# --- context: when an occurrence of a trigger is no evidence about the scene --------------------------------------
# Single lower-case words (as the tokenizer cuts them: "didn't" is "didn" + "t").

# Negation: one of these within the four words before a cue, in the same clause ("no rain", "not a cloud", "never
# saw the sun"); "t" counts after a word ending in n ("didn't", "wasn't").
NEGATORS: frozenset[str] = frozenset({"no", "not", "never", "nor", "without", "neither", "nothing", "none", "hardly",
                                      "scarcely", "t"})
# Comparison: one of these earlier in the cue's clause ("like a ship in a gale", "seemed a sea"); "though" only
# after "as".
SIMILE_MARKERS: frozenset[str] = frozenset({"like", "seemed", "seem", "seems", "seeming", "resembling", "resembled",
                                            "resembles", "though"})
# A sentence holding one of these is not the narrated scene: conditional, remembered, dreamt, reported, told or
# depicted ("if it rained", "he remembered the snow", "he told us of a storm", "a painting of a storm").
NON_SCENE_MARKERS: frozenset[str] = frozenset({
    "if", "unless", "whenever", "tomorrow", "morrow", "remember", "remembered", "remembering", "recalled", "recall",
    "memory", "memories", "dream", "dreamed", "dreamt", "dreaming", "dreams", "imagine", "imagined", "imagining", "ago",
    "story", "stories", "legend", "tell", "told", "telling", "related", "painting", "picture", "pictures", "painted",
    "poem", "song",
})
TIME_UNITS: frozenset[str] = frozenset({"morning", "mornings", "afternoon", "afternoons", "evening", "evenings",
                                        "night", "nights", "day", "days", "week", "month", "year", "summer",
                                        "winter", "spring", "autumn", "time", "sunday", "season", "hour"})
# The same within the clause of the cue only (between punctuation marks): modals, wishes, guesses and habits, which
# often belong to another clause of a narrated sentence ("after midnight I was passing the point, and should soon be
# clear"; "by the lead, which I cast often, I found that after midnight ..."). "every"/"each" count only before a
# time word (TIME_UNITS) within two words ("every morning", not "every little slip of shade"), "used" only before
# "to".
NON_SCENE_CLAUSE_MARKERS: frozenset[str] = frozenset({
    "would", "shall", "will", "ll", "should", "might", "may", "must", "can", "could", "ought", "wish", "wished", "hope",
    "hoped", "perhaps", "suppose", "supposed", "fancy", "fancied", "always", "often", "usually", "sometimes",
    "generally", "seldom", "rarely", "every", "each", "used",
})
# A weather or location cue (other than indoor) in a clause holding one of these is a view, not the scene's place or
# weather ("watched the bathers on the beach", "snow on the distant peaks"). A character looking out of a window is
# indoor, whatever the view.
VIEW_MARKERS: frozenset[str] = frozenset({"saw", "see", "seen", "sees", "seeing", "watched", "watching", "view",
                                          "views", "distance", "distant", "afar", "horizon", "visible", "beheld",
                                          "behold", "glimpse", "overlooking", "overlooked"})
# Abbreviations before a capitalised word: "Mr. Frost" is a name although it follows a full stop.
TITLE_ABBREVIATIONS: frozenset[str] = frozenset(
    {"mr", "mrs", "ms", "dr", "st", "mt", "messrs", "rev", "capt", "col", "gen", "lt", "sgt", "prof", "mme", "mlle",
     "m", "no"})
# A trigger that ends a hyphenated compound is still evidence for these fields ("drawing-room" is a room); elsewhere
# the head of a compound is another thing ("sea-room", "rain-water"), except after these first parts ("to-night").
COMPOUND_HEAD_FIELDS: frozenset[str] = frozenset({"location", "movement"})
COMPOUND_HEAD_PREFIXES: frozenset[str] = frozenset({"to", "mid"})

# --- tense: is the passage, and the cue's sentence, narration of a scene? ----------------------------------------
# The narrated scene is told in the past tense ("it was raining", "we sat in the parlour"); a present-tense sentence
# in the narration is a general statement, a description or a reflection ("the town lies on a hill", "you may paddle
# all day long"), and a passage whose narration is mostly in the present tense has no scene (essays, guide-book
# descriptions). Counted outside dialogue only. Present: these finite forms ("have" and "do" after a modal or "to"
# are already modal clauses or infinitives; the rule reads the sentence, so a present form anywhere in it counts).
PRESENT_TENSE_WORDS: frozenset[str] = frozenset({
    "is", "are", "am", "has", "have", "does", "do",
    # the third person of the verbs a description of a place or a general statement uses ("the town lies on a hill",
    # "the road runs along the river", "the pyramid makes a triangle")
    "lies", "stands", "rises", "flows", "stretches", "leads", "makes", "goes", "takes", "gives", "shines",
    "becomes", "remains", "contains", "appears", "extends", "belongs", "consists", "grows", "hangs", "sits", "says",
    "knows", "thinks", "seems",
})
# Past: these forms, and any word of four or more letters ending in "-ed" except the few below (not verbs).
PAST_TENSE_WORDS: frozenset[str] = frozenset("""
was were had did went came sat stood saw took made said found got left ran rode lay felt knew thought told began
brought kept held heard led met paid put read rose sank set shook slept spoke spent stole struck swam swung threw
understood woke wore wrote drew drove fell flew fought gave grew hung hid hit hurt let lit lost meant sent shot shut
sang bore broke bought caught chose dug fed fled forgot froze lent became crept""".split())
NOT_PAST_ED: frozenset[str] = frozenset({"need", "indeed", "hundred", "speed", "seed", "feed", "breed", "creed",
                                         "naked", "wicked", "sacred", "aged", "beloved", "ragged"})
