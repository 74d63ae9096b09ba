"""Seeded generator of grammatical, varied English sentences for speech synthesis.

Everything here is our own: a small phrase-structure grammar (noun phrases with determiners
and adjectives, verb phrases with tense, aspect, negation and modals, prepositional phrases,
subordinate and relative clauses, reported speech, passives, questions, imperatives, numbers
written as words) over hand-written word lists grouped by meaning, so that verbs meet fitting
subjects and objects. No text corpus is used.

``generate_sentences(n, seed)`` is deterministic for a given seed; ``sentence_for(key)`` gives
one sentence for any hashable key (used to regenerate a rejected utterance deterministically).
Sentences have ``WORD_RANGE`` words (about 2-8 s when spoken).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

WORD_RANGE: tuple[int, int] = (5, 22)
"""Default inclusive range of words per sentence (about 2-8 s of speech at 2.5-3 words/s)."""


def _words(text: str) -> tuple[str, ...]:
    """Whitespace-separated entries, duplicates dropped, order kept; ``_`` becomes a space."""
    return tuple(dict.fromkeys(w.replace("_", " ") for w in text.split()))


# --------------------------------------------------------------------------------------------
# Word lists. Nouns: "singular" or "singular/plural" (irregular). Verbs: "base" (regular),
# "base*" (regular, final consonant doubled: stop -> stopped, stopping) or "base|past|participle".

PEOPLE = _words("""
teacher doctor farmer nurse baker driver pilot painter singer dancer writer student lawyer
engineer builder carpenter plumber electrician gardener librarian scientist professor artist
musician photographer journalist editor reporter soldier sailor captain officer detective judge
mayor manager clerk cashier waiter waitress chef cook butcher fisherman/fishermen hunter
shepherd miner mechanic tailor barber dentist surgeon pharmacist veterinarian architect designer
programmer accountant banker merchant shopkeeper salesman/salesmen customer passenger traveler
tourist visitor guest host neighbor stranger friend cousin uncle aunt nephew niece grandmother
grandfather mother father brother sister daughter son wife/wives husband child/children baby
boy girl man/men woman/women person/people teenager toddler parent grandparent colleague partner
boss employee worker volunteer coach athlete runner swimmer climber cyclist skier player referee
champion winner beginner expert actor actress director producer poet novelist historian
philosopher priest monk nun king queen prince princess knight servant guard porter janitor
courier mailman/mailmen messenger secretary assistant receptionist translator interpreter tutor
principal pupil classmate roommate tenant landlord owner inventor explorer astronaut sculptor
potter weaver jeweler florist grocer ranger lifeguard firefighter policeman/policemen paramedic
midwife chemist biologist geologist astronomer economist politician senator diplomat ambassador
governor president minister lecturer researcher analyst consultant critic comedian magician
juggler clown acrobat violinist pianist drummer guitarist composer conductor sheriff
thief/thieves burglar prisoner witness pilgrim hermit orphan widow bride groom infant youngster
villager citizen resident beekeeper blacksmith locksmith watchmaker bookseller shopper diver
hiker camper sailor pirate cowboy rancher vendor supplier buyer seller dealer landlady stylist
nanny babysitter cleaner gatekeeper fireman/firemen lumberjack bricklayer surveyor
""")

ANIMALS = _words("""
dog cat horse cow pig sheep/sheep goat chicken duck goose/geese rabbit mouse/mice rat hamster
parrot pigeon crow owl eagle hawk falcon sparrow robin swan heron stork penguin seagull turkey
peacock ostrich fox wolf/wolves bear deer/deer moose/moose elk/elk squirrel hedgehog badger
beaver otter raccoon skunk bat frog toad turtle tortoise lizard snake crocodile alligator
fish/fish salmon/salmon trout/trout shark whale dolphin seal octopus crab lobster shrimp/shrimp
jellyfish/jellyfish starfish/starfish snail spider ant bee wasp butterfly moth beetle ladybug
grasshopper cricket mosquito/mosquitoes fly worm lion tiger leopard cheetah panther jaguar
elephant giraffe zebra hippo rhino monkey gorilla chimpanzee kangaroo koala panda camel llama
donkey mule pony calf/calves lamb puppy kitten foal piglet buffalo/buffalo bison/bison hyena
antelope gazelle porcupine mole weasel ferret lynx cobra flamingo pelican parakeet canary
woodpecker hummingbird vulture raven magpie stallion mare rooster hen gull orca walrus beetle
""")

OBJECTS = _words("""
book pen pencil notebook letter envelope key lock box bag basket bottle jar cup mug glass plate
bowl spoon fork knife/knives pot pan kettle teapot lamp candle clock watch phone camera radio
television computer laptop keyboard screen printer cable battery charger umbrella hat cap scarf
glove coat jacket sweater shirt dress skirt sock shoe boot sandal belt wallet purse ring
necklace bracelet earring mirror comb brush toothbrush towel blanket pillow mattress curtain
carpet rug chair table desk sofa bench stool shelf/shelves cupboard cabinet drawer wardrobe bed
door window gate fence ladder bucket broom mop hammer nail screw screwdriver saw wrench drill
shovel rake hose axe rope chain wire ribbon needle button zipper map globe atlas dictionary
newspaper magazine poster painting photograph picture frame vase statue trophy medal coin
ticket passport receipt diary calendar calculator ruler eraser stapler folder briefcase
suitcase backpack trunk crate barrel package parcel gift toy doll kite balloon ball racket
helmet whistle drum guitar violin piano flute trumpet harp banjo accordion microphone telescope
microscope compass thermometer flashlight lantern match lighter sponge bandage wheelchair
crutch cane stick log rock stone brick tile plank sign banner flag tent paddle oar anchor sail
net hook bell padlock engine motor wheel tire pedal handle knob switch socket plug fan heater
stove oven fridge freezer microwave toaster blender jug pitcher tray napkin tablecloth apron
cushion quilt hammock cradle wheelbarrow sled skateboard surfboard canvas easel palette crayon
marker blackboard whiteboard pamphlet brochure leaflet booklet manual document certificate
diploma banknote spade trowel hanger cage aquarium collar leash saddle horseshoe toolbox
keychain notepad clipboard highlighter envelope binder sketchbook postcard stamp sticker badge
pin brooch locket wristwatch bangle handkerchief shawl cloak vest tie apron raincoat slipper
sneaker mitten beanie bonnet costume uniform blouse cardigan hoodie overcoat tuxedo
""")

SURFACES = _words("""
table desk shelf bench counter sofa bed chair piano cabinet dresser windowsill stool floor
cupboard trunk crate tray
""")

VEHICLES = _words("""
car bus truck van taxi bicycle motorcycle scooter train tram boat ship yacht canoe kayak ferry
airplane helicopter jet rocket tractor ambulance wagon carriage cart trolley submarine sailboat
caravan jeep limousine minivan bulldozer sled motorboat pickup
""")

FOODS = _words("""
apple banana orange pear peach plum cherry grape lemon lime mango pineapple melon watermelon
strawberry blueberry raspberry tomato/tomatoes potato/potatoes carrot onion cucumber pepper
pumpkin cabbage mushroom egg sandwich cookie biscuit cake pie muffin cupcake pancake waffle
sausage burger pizza taco burrito dumpling pastry croissant bagel doughnut pretzel salad omelet
steak pickle olive walnut almond peanut cracker lollipop avocado apricot coconut fig kiwi
radish turnip beet zucchini eggplant bean pea chestnut hazelnut raisin meatball pudding tart
scone bun sundae loaf/loaves pear cauliflower artichoke nectarine tangerine grapefruit
""")

MASS_FOODS = _words("""
bread rice soup cheese butter milk water juice coffee tea sugar salt flour honey jam yogurt
cereal pasta spaghetti chocolate cream porridge lemonade beef pork ham bacon toast popcorn
oatmeal broccoli spinach garlic ginger cinnamon vinegar oil ketchup mustard sauce gravy custard
syrup cocoa tofu seafood lettuce celery corn stew curry broth pepper
""")

PLACES = _words("""
kitchen bedroom bathroom garage garden attic basement cellar hallway balcony porch yard office
library museum gallery theater cinema stadium gym school classroom university college hospital
clinic pharmacy bakery market supermarket shop store mall restaurant cafe hotel inn motel hostel
airport station harbor port dock pier bridge tunnel road street avenue highway path trail lane
alley square plaza park playground zoo farm barn stable field meadow orchard vineyard forest
jungle desert mountain hill valley canyon cliff cave river lake pond stream waterfall beach
coast shore island bay ocean sea lighthouse castle palace tower church cathedral temple chapel
monastery cemetery village town city suburb neighborhood factory warehouse workshop studio
laboratory bank prison courthouse embassy campsite cabin cottage farmhouse mansion apartment
house hut shed greenhouse pool spa salon bookstore fountain monument memorial arena auditorium
hall lobby corridor staircase rooftop terrace patio courtyard quarry swamp marsh glacier volcano
prairie ranch nursery kindergarten bakery boathouse chapel gatehouse gym marina observatory
planetarium aquarium greenhouse lodge pavilion boulevard crossroads harbor riverbank hillside
""")

CITIES = _words("""
London Paris Berlin Madrid Rome Vienna Prague Dublin Edinburgh Glasgow Manchester Liverpool
Oxford Cambridge Boston Chicago Denver Seattle Portland Austin Dallas Houston Atlanta Miami
Phoenix Toronto Montreal Vancouver Sydney Melbourne Auckland Tokyo Kyoto Osaka Seoul Beijing
Shanghai Mumbai Delhi Cairo Nairobi Lagos Lisbon Barcelona Venice Amsterdam Brussels Copenhagen
Stockholm Oslo Helsinki Warsaw Budapest Athens Istanbul Moscow Lima Santiago Havana France
Germany Spain Italy Portugal Ireland Scotland Wales England Canada Mexico Brazil Argentina Chile
Peru Egypt Kenya Nigeria India China Japan Korea Australia Norway Sweden Finland Denmark Poland
Greece Iceland Switzerland Austria Belgium Morocco Vietnam Thailand Indonesia
""")

ABSTRACTS = _words("""
idea plan story question answer problem solution decision mistake reason result promise secret
rumor joke lesson rule law theory opinion argument agreement discussion conversation meeting
interview speech lecture report proposal budget schedule deadline project strategy method
process system design pattern message announcement invitation apology complaint request
suggestion warning journey trip adventure vacation holiday festival celebration ceremony
wedding party concert performance show game match contest competition race tournament election
campaign protest debate negotiation experiment survey study discovery invention mystery
challenge opportunity risk accident incident emergency crisis conflict battle treaty deal
contract bargain price fee salary reward prize favor chance choice option difference
connection relationship friendship memory dream nightmare wish fear doubt belief habit routine
tradition custom language subject topic theme chapter paragraph sentence phrase title recipe
song poem novel movie film episode series program article essay review summary explanation
description definition example exercise test exam quiz assignment task job career role duty
position application policy loan debt account estimate forecast prediction guess calculation
measurement puzzle riddle legend myth fairy_tale anecdote speech sermon verdict ruling
""")

ADJ_PERSON = _words("""
kind friendly tired young old tall short clever brave shy quiet happy sad angry nervous calm
patient polite rude honest cheerful curious lazy busy famous rich poor proud lonely careful
careless generous gentle grumpy hungry thirsty sleepy strong weak wise foolish funny serious
smart talented elderly anxious eager excited worried confused surprised bored jealous grateful
modest stubborn ambitious creative energetic confident cautious thoughtful helpful loyal
reliable sensible sincere humble charming clumsy bold restless relaxed brilliant skilled
experienced retired new local foreign mysterious elegant homesick exhausted delighted
determined embarrassed frightened furious impatient innocent lucky unlucky optimistic
pessimistic practical punctual organized messy gloomy jolly talkative timid nosy witty wealthy
popular cheeky fearless forgetful gracious hardworking moody grouchy stern strict sociable
""")

ADJ_ANIMAL = _words("""
small large young old hungry tired wild friendly lazy noisy fluffy tiny huge curious brave
shy frightened clever playful sleepy gentle fierce spotted striped brown black white gray
furry tame stray injured loyal graceful skinny fat enormous nervous restless patient lost
""")

ADJ_THING = _words("""
red blue green yellow black white brown gray orange purple pink golden silver wooden metal
plastic leather woolen cotton ceramic heavy light small large big tiny huge enormous little
long short wide narrow thick thin tall round square flat sharp blunt smooth rough soft hard
shiny dull bright dark clean dirty dusty muddy wet dry new old ancient modern antique broken
cracked rusty fragile sturdy expensive cheap valuable useful useless plain fancy colorful
striped spotted checkered empty full warm cold hot cool noisy silent portable electric digital
spare missing favorite original ordinary unusual beautiful ugly lovely elegant comfortable
uncomfortable delicate precious battered faded crumpled wrinkled polished tattered bulky
compact hollow solid strange familiar mysterious enormous gleaming sparkling worn tiny
""")

ADJ_FOOD = _words("""
fresh ripe sweet sour bitter salty spicy delicious tasty warm hot cold crispy crunchy juicy
soft stale rotten frozen homemade tender creamy sticky dry burnt raw huge tiny organic local
expensive cheap leftover bland savory greasy chewy smoky fluffy golden
""")

ADJ_PLACE = _words("""
quiet busy crowded empty dark bright small large old ancient modern famous beautiful peaceful
noisy cozy warm cold damp gloomy sunny shady windy remote distant nearby narrow wide huge
abandoned deserted hidden secret popular lively charming elegant historic rural urban local
foreign open spacious cramped tidy messy clean dirty muddy dusty flooded frozen silent sacred
royal grand rocky sandy steep green tiny famous enormous lonely mysterious strange
""")

ADJ_ABSTRACT = _words("""
important strange simple difficult easy interesting boring long short surprising complicated
clever brilliant terrible wonderful serious funny secret sudden detailed honest final new
original useful practical risky dangerous safe urgent private public official formal informal
ambitious modest generous fair unfair reasonable ridiculous obvious mysterious confusing clear
vague brief lengthy exciting tiring relaxing pleasant unpleasant awkward tricky challenging
remarkable unusual typical rare common familiar unexpected strict gentle harsh sensible silly
wise bold curious sad happy lucky famous popular strange controversial memorable
""")

ADVERBS = _words("""
quickly slowly carefully quietly loudly gently happily sadly angrily nervously calmly
patiently eagerly proudly politely rudely kindly bravely wisely foolishly honestly secretly
openly suddenly gradually easily badly neatly clumsily gracefully awkwardly smoothly firmly
softly tenderly warmly coldly briskly lazily busily cheerfully gladly reluctantly willingly
anxiously curiously carelessly thoroughly properly correctly perfectly silently noisily hastily
steadily swiftly rapidly promptly boldly shyly cautiously confidently playfully seriously
casually formally deliberately accidentally successfully skillfully expertly generously
joyfully gratefully wildly fiercely furiously cleverly elegantly beautifully loosely tightly
roughly precisely sleepily hungrily stubbornly bitterly sweetly innocently mysteriously
obediently faithfully loyally privately publicly bluntly frankly restlessly tirelessly
effortlessly heavily lightly cheerfully calmly fondly grimly merrily solemnly wearily
""")

FREQ_ADVERBS = _words("always usually often sometimes rarely seldom never occasionally frequently")

NAMES = _words("""
James John Robert Michael William David Richard Joseph Thomas Charles Daniel Matthew Anthony
Mark Donald Steven Paul Andrew Joshua Kenneth Kevin Brian George Timothy Ronald Edward Jason
Jeffrey Ryan Jacob Gary Nicholas Eric Jonathan Stephen Larry Justin Scott Brandon Benjamin
Samuel Gregory Alexander Frank Patrick Raymond Jack Dennis Jerry Tyler Aaron Adam Nathan Henry
Douglas Zachary Peter Kyle Noah Ethan Jeremy Walter Christian Keith Roger Terry Austin Sean
Gerald Carl Harold Dylan Arthur Lawrence Jordan Jesse Bryan Billy Bruce Gabriel Joe Logan Alan
Albert Elijah Wayne Randy Vincent Mason Roy Ralph Bobby Russell Bradley Philip Eugene Oliver Leo
Oscar Felix Hugo Max Simon Martin Victor Isaac Lucas Owen Caleb Liam Finn Theo Miles Ian Colin
Neil Graham Stuart Rupert Edmund Alfred Harry Freddie Archie Mary Patricia Jennifer Linda
Elizabeth Barbara Susan Jessica Sarah Karen Lisa Nancy Betty Margaret Sandra Ashley Kimberly
Emily Donna Michelle Carol Amanda Dorothy Melissa Deborah Stephanie Rebecca Sharon Laura
Cynthia Kathleen Amy Angela Shirley Anna Brenda Pamela Emma Nicole Helen Samantha Katherine
Christine Rachel Carolyn Janet Catherine Maria Heather Diane Ruth Julie Olivia Joyce Virginia
Victoria Kelly Lauren Christina Joan Evelyn Judith Megan Andrea Hannah Jacqueline Martha Gloria
Teresa Ann Sara Madison Frances Kathryn Janice Jean Abigail Alice Judy Sophia Grace Denise
Amber Doris Marilyn Danielle Beverly Isabella Theresa Diana Natalie Charlotte Marie Chloe Lucy
Ella Ava Mia Zoe Ruby Isla Freya Poppy Daisy Lily Rose Iris Violet Hazel Nora Clara Stella
Eleanor Harriet Beatrice Matilda Florence Edith Agnes Mabel Ivy Holly Ellie Molly Jasmine
Priya Aisha Fatima Mei Yuki Sofia Elena Ingrid Astrid Greta Nadia Leila Amira Maya Tara Nina
Rosa Carmen Lucia Paula
""")

SURNAMES = _words("""
Smith Johnson Williams Brown Jones Miller Davis Wilson Anderson Taylor Moore Jackson Lee
Thompson White Harris Clark Lewis Robinson Walker Young Allen King Wright Green Baker Adams
Nelson Hill Campbell Mitchell Roberts Carter Phillips Evans Turner Parker Collins Edwards
Stewart Morris Murphy Cook Rogers Morgan Cooper Peterson Reed Bailey Bell Howard Ward Cox
Richardson Wood Watson Brooks Bennett Gray Hughes Price Sanders Myers Ross Foster Powell
Jenkins Perry Sullivan Fisher Henderson Coleman Patterson Reynolds Hamilton Wallace West Cole
Hayes Gibson Bryant Ellis Stevens Murray Ford Marshall Owens Harrison Patel Kim Chen Nguyen
Garcia Lopez Singh Khan Novak Larsen Berg Rossi Weber Fischer Dubois Moreau Silva Costa Tanaka
Sato Okafor Mensah
""")

TITLES = _words("Doctor Professor Captain Detective Officer Judge Coach Aunt Uncle Nurse")

# Verbs by the frame they fit (a verb may fit several frames).
V_INTRANS_ANY = _words("""
sleep|slept|slept wait rest run|ran|run walk swim|swam|swum jump hide|hid|hidden climb wander
shiver listen move turn stop* play return arrive escape disappear appear fall|fell|fallen
sit|sat|sat stand|stood|stood wake|woke|woken hurry relax struggle pause stay recover
grow|grew|grown yawn sneeze cough blink tremble crawl race march stumble limp roam travel
settle hesitate
""")
V_INTRANS_PERSON = _words("""
laugh smile shout cry sing|sang|sung dance whisper complain agree argue apologize celebrate
pray vote volunteer cook knit* read|read|read write|wrote|written study work practice paint
draw|drew|drawn speak|spoke|spoken talk chat* joke nod* wave frown sigh giggle shop* jog*
skate surf camp commute retire resign graduate compete meditate exercise rehearse perform
listen cheer whistle scream stretch applaud gossip improvise
""")
V_INTRANS_ANIMAL = _words("""
bark growl howl purr chirp squeak roar buzz hiss hop* graze flutter sniff quack neigh
scratch nibble snore pounce bleat
""")
V_OBJECT = _words("""
carry paint clean repair fix find|found|found lose|lost|lost buy|bought|bought sell|sold|sold
borrow lend|lent|lent drop* hide|hid|hidden wrap* fold wash polish open close lift push pull
hold|held|held grab* throw|threw|thrown catch|caught|caught break|broke|broken
build|built|built make|made|made design measure weigh check examine inspect sort arrange pack
unpack load deliver send|sent|sent receive return replace move lock unlock hang|hung|hung
decorate sketch photograph count collect gather keep|kept|kept store share steal|stole|stolen
bring|brought|brought take|took|taken choose|chose|chosen pick order rent label scrub* dust
shake|shook|shaken tie untie drag* kick touch test fill empty abandon forget|forgot|forgotten
leave|left|left cut|cut|cut bend|bent|bent stretch twist squeeze scratch bury display print
scan* copy sign stamp seal tear|tore|torn sew|sewed|sewn glue tape stack pile recycle donate
misplace damage destroy ruin rescue protect guard carve mend adjust install remove prepare
heat cool warm dry wipe rinse soak spray sharpen tighten loosen drop* hammer wrap* shake
""")
V_FOOD = _words("""
eat|ate|eaten cook bake taste slice chop* peel boil fry grill roast serve order share finish
swallow chew bite|bit|bitten buy|bought|bought sell|sold|sold pick wash mix stir* freeze|froze|frozen
heat warm reheat smell devour sample spread|spread|spread grow|grew|grown deliver prepare
""")
V_PERSON = _words("""
meet|met|met help call visit thank follow invite greet hug* kiss teach|taught|taught ask warn
remind introduce interview hire pay|paid|paid join trust forgive|forgave|forgiven blame praise
admire respect encourage comfort surprise disturb annoy amuse interrupt ignore recognize watch
observe rescue protect support guide accompany contact phone congratulate examine chase
photograph miss tease
""")
V_ANIMAL = _words("""
feed|fed|fed chase catch|caught|caught follow photograph watch pet* groom train walk brush wash
rescue adopt tame ride|rode|ridden spot* observe study count frighten scare carry
""")
V_ABSTRACT = _words("""
discuss explain describe remember consider accept reject propose suggest plan* organize cancel
postpone announce mention review approve question understand|understood|understood
forget|forgot|forgotten imagine invent solve create write|wrote|written read|read|read finish
begin|began|begun start continue complete ignore repeat share support change improve study
analyze present publish record edit translate memorize summarize celebrate attend win|won|won
lose|lost|lost enjoy prefer* hate love criticize defend debate investigate predict prepare
practice rehearse schedule delay arrange negotiate sign break|broke|broken keep|kept|kept
tell|told|told hear|heard|heard reveal discover notice
""")
V_PLACE = _words("""
visit leave|left|left enter explore reach clean paint cross search decorate guard photograph
tour approach avoid inspect describe sketch sweep|swept|swept renovate rebuild|rebuilt|rebuilt
abandon own rent find|found|found map* defend
""")
V_VEHICLE = _words("""
drive|drove|driven park ride|rode|ridden wash repair paint rent borrow sell|sold|sold
buy|bought|bought steer stop* start load unload board miss catch|caught|caught tow push inspect
""")
V_CLAUSE = _words("""
say|said|said think|thought|thought believe know|knew|known hope notice realize suspect
remember forget|forgot|forgotten explain announce mention claim admit* promise insist agree
doubt guess feel|felt|felt hear|heard|heard learn discover decide understand|understood|understood
imagine dream fear worry complain argue predict report confirm deny reply
""")

MODALS = ("can", "could", "should", "might", "must", "would", "may")
WEEKDAYS = _words("Monday Tuesday Wednesday Thursday Friday Saturday Sunday")
MONTHS = _words(
    "January February March April May June July August September October November December"
)
SEASONS = _words("spring summer autumn winter")
DAY_PARTS = _words("morning afternoon evening night")
MEALS = _words("breakfast lunch dinner supper")
EVENTS = _words("""
the_meeting the_concert the_storm the_holidays the_game the_party the_wedding the_exam
the_festival the_ceremony the_match the_interview the_lecture the_rehearsal the_flood
""")
SUB_PAST = ("when", "after", "before", "because", "although", "as soon as", "since", "once")
SUB_FUTURE = ("if", "when", "as soon as", "unless", "before", "after", "once")
CURRENCIES = ("dollars", "pounds", "euros")
TIME_UNITS = ("minutes", "hours", "days", "weeks", "months", "years")

# --------------------------------------------------------------------------------------------
# Morphology


@dataclass(frozen=True)
class Noun:
    sg: str
    pl: str


@dataclass(frozen=True)
class Verb:
    base: str
    s: str
    past: str
    pp: str
    ing: str


def _plural(w: str) -> str:
    if w.endswith(("s", "x", "z", "ch", "sh")):
        return w + "es"
    if w.endswith("y") and w[-2] not in "aeiou":
        return w[:-1] + "ies"
    return w + "s"


def _noun(entry: str) -> Noun:
    sg, _, pl = entry.partition("/")
    return Noun(sg, pl or _plural(sg))


def _verb(entry: str) -> Verb:
    double = entry.endswith("*")
    parts = entry.rstrip("*").split("|")
    b = parts[0]
    if b.endswith(("s", "x", "z", "ch", "sh", "o")):
        s = b + "es"
    elif b.endswith("y") and b[-2] not in "aeiou":
        s = b[:-1] + "ies"
    else:
        s = b + "s"
    if double:
        stem = b + b[-1]
        past, ing = stem + "ed", stem + "ing"
    else:
        if b.endswith("e"):
            past = b + "d"
        elif b.endswith("y") and b[-2] not in "aeiou":
            past = b[:-1] + "ied"
        else:
            past = b + "ed"
        if b.endswith("ie"):
            ing = b[:-2] + "ying"
        elif b.endswith("e") and not b.endswith(("ee", "oe", "ye")) and len(b) > 2:
            ing = b[:-1] + "ing"
        else:
            ing = b + "ing"
    if len(parts) == 3:
        past, pp = parts[1], parts[2]
    else:
        pp = past
    return Verb(b, s, past, pp, ing)


_NOUN_LISTS = {
    "person": PEOPLE,
    "animal": ANIMALS,
    "object": OBJECTS,
    "surface": SURFACES,
    "vehicle": VEHICLES,
    "food": FOODS,
    "place": PLACES,
    "abstract": ABSTRACTS,
}
NOUNS: dict[str, tuple[Noun, ...]] = {k: tuple(_noun(e) for e in v) for k, v in _NOUN_LISTS.items()}
MASS: tuple[str, ...] = MASS_FOODS

_VERB_LISTS = {
    "intrans_any": V_INTRANS_ANY,
    "intrans_person": V_INTRANS_PERSON,
    "intrans_animal": V_INTRANS_ANIMAL,
    "object": V_OBJECT,
    "food": V_FOOD,
    "person": V_PERSON,
    "animal": V_ANIMAL,
    "abstract": V_ABSTRACT,
    "place": V_PLACE,
    "vehicle": V_VEHICLE,
    "clause": V_CLAUSE,
}
VERBS: dict[str, tuple[Verb, ...]] = {
    k: tuple(dict.fromkeys(_verb(e) for e in v)) for k, v in _VERB_LISTS.items()
}
_ADJ = {
    "person": ADJ_PERSON,
    "animal": ADJ_ANIMAL,
    "object": ADJ_THING,
    "surface": ADJ_THING,
    "vehicle": ADJ_THING,
    "food": ADJ_FOOD,
    "place": ADJ_PLACE,
    "abstract": ADJ_ABSTRACT,
}

# --------------------------------------------------------------------------------------------
# Numbers as words

_ONES = _words("""
zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen
sixteen seventeen eighteen nineteen
""")
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
_ORD_IRREGULAR = {
    "one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
    "nine": "ninth", "twelve": "twelfth",
}  # fmt: skip


def number_words(n: int) -> str:
    """Cardinal number in words, 0 <= n < 1,000,000 (``342`` -> "three hundred and forty-two")."""
    if not 0 <= n < 1_000_000:
        raise ValueError(f"number out of range: {n}")
    if n < 20:
        return _ONES[n]
    if n < 100:
        t, o = divmod(n, 10)
        return _TENS[t] + (f"-{_ONES[o]}" if o else "")
    if n < 1000:
        h, rest = divmod(n, 100)
        return f"{_ONES[h]} hundred" + (f" and {number_words(rest)}" if rest else "")
    th, rest = divmod(n, 1000)
    tail = ""
    if rest:
        tail = f" and {number_words(rest)}" if rest < 100 else f" {number_words(rest)}"
    return f"{number_words(th)} thousand{tail}"


def ordinal_words(n: int) -> str:
    """Ordinal number in words (``21`` -> "twenty-first")."""
    words = number_words(n)
    head, sep, last = words.rpartition("-") if "-" in words else ("", "", words)
    if " " in last:
        head2, _, last = last.rpartition(" ")
        head, sep = (head + sep + head2, " ")
    if last in _ORD_IRREGULAR:
        last = _ORD_IRREGULAR[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last += "th"
    return head + sep + last


def year_words(y: int) -> str:
    """A year as it is read: 1984 -> "nineteen eighty-four", 2008 -> "two thousand and eight"."""
    if 2000 <= y < 2010:
        return number_words(y)
    hi, lo = divmod(y, 100)
    if lo == 0:
        return f"{number_words(hi)} hundred"
    return f"{number_words(hi)} {number_words(lo) if lo >= 10 else 'oh ' + number_words(lo)}"


# --------------------------------------------------------------------------------------------
# Grammar

_SILENT_H = ("hour", "honest", "honor", "heir")
_YU = ("uni", "use", "usu", "uti", "ure", "euro", "one", "once", "ewe", "uku", "ufo")


def article(word: str) -> str:
    """``a`` or ``an`` for the word that follows."""
    w = word.lower()
    if w.startswith(_SILENT_H):
        return "an"
    if w.startswith(_YU):
        return "a"
    return "an" if w[:1] in "aeiou" else "a"


_PAST_TENSES = ("past", "pastprog", "pastperf", "used")
_FUTURE_TENSES = ("fut", "going", "futprog", "modal")


@dataclass
class _Subj:
    words: list[str]
    person: int  # 1, 2 or 3
    plural: bool


class _Grammar:
    """One sentence at a time from a ``random.Random``."""

    def __init__(self, rng: random.Random) -> None:
        self.r = rng

    def pick(self, seq: Sequence):
        return seq[self.r.randrange(len(seq))]

    def chance(self, p: float) -> bool:
        return self.r.random() < p

    # -- noun phrases ------------------------------------------------------------------------
    def _det(self, head: str, plural: bool, definite: float = 0.6) -> list[str]:
        r = self.r.random()
        if r < definite:
            return ["the"]
        if r < definite + 0.15:
            return [self.pick(("my", "your", "his", "her", "our", "their"))]
        if r < definite + 0.25:
            return [
                ("these" if self.chance(0.5) else "those")
                if plural
                else self.pick(("this", "that"))
            ]
        if plural:
            q = self.pick(("some", "several", "a few", "many", "two", "three", "both", "number"))
            return [number_words(self.r.randint(2, 40)) if q == "number" else q]
        return [article(head)]

    def noun_phrase(
        self, kind: str, plural: bool | None = None, adj_p: float = 0.45, definite: float = 0.6
    ) -> tuple[list[str], bool]:
        """Determiner, optional adjective(s), noun of ``kind``; returns (words, plural)."""
        noun = self.pick(NOUNS[kind])
        if plural is None:
            plural = self.chance(0.3)
        head = noun.pl if plural else noun.sg
        adjs: list[str] = []
        if self.chance(adj_p):
            adjs.append(self.pick(_ADJ[kind]))
            if self.chance(0.15):
                second = self.pick(_ADJ[kind])
                if second != adjs[0]:
                    adjs.append(second)
        det = self._det(adjs[0] if adjs else head, plural, definite)
        if det == ["both"] and not plural:
            det = ["the"]
        return [*det, *adjs, head], plural

    def mass_phrase(self) -> list[str]:
        food = self.pick(MASS)
        q = self.pick(("some", "the", "a little", "a lot of", "a bowl of", "a cup of", "fresh"))
        return [q, food]

    def food_object(self) -> tuple[list[str], bool]:
        if self.chance(0.3):
            return self.mass_phrase(), False
        return self.noun_phrase("food")

    def person_subject(self, allow_pronoun: bool = True) -> _Subj:
        r = self.r.random()
        if allow_pronoun and r < 0.2:
            pron, person, plural = self.pick(
                (("I", 1, False), ("you", 2, False), ("he", 3, False), ("she", 3, False),
                 ("we", 1, True), ("they", 3, True))
            )  # fmt: skip
            return _Subj([pron], person, plural)
        if r < 0.45:
            if self.chance(0.2):
                return _Subj([self.pick(TITLES), self.pick(SURNAMES)], 3, False)
            if self.chance(0.12):
                return _Subj([self.pick(NAMES), "and", self.pick(NAMES)], 3, True)
            return _Subj([self.pick(NAMES)], 3, False)
        words, plural = self.noun_phrase("person")
        if self.chance(0.15):
            words += self._np_modifier()
        return _Subj(words, 3, plural)

    def _np_modifier(self) -> list[str]:
        c = self.r.random()
        if c < 0.4:
            return ["from", "the", *self.noun_phrase("place", False, 0.3, 1.0)[0][1:]]
        if c < 0.7:
            return ["with", *self.noun_phrase("object", None, 0.6, 0.0)[0]]
        return ["from", self.pick(CITIES)]

    def person_object(self) -> list[str]:
        r = self.r.random()
        if r < 0.15:
            return [self.pick(("me", "you", "him", "her", "us", "them"))]
        if r < 0.4:
            return [self.pick(NAMES)]
        return self.noun_phrase("person")[0]

    def place_pp(self) -> list[str]:
        if self.chance(0.12):
            return [self.pick(("in", "near", "outside")), self.pick(CITIES)]
        prep = self.pick(("in", "near", "behind", "outside", "at", "close to", "not far from"))
        return [prep, *self.noun_phrase("place", False, 0.35, 0.85)[0]]

    def surface_pp(self) -> list[str]:
        prep = self.pick(("on", "under", "next to", "beside", "behind", "near"))
        return [prep, *self.noun_phrase("surface", False, 0.3, 0.9)[0]]

    # -- time expressions --------------------------------------------------------------------
    def time_expr(self, tense: str) -> list[str]:
        if tense in _PAST_TENSES:
            opts: list[Callable[[], str]] = [
                lambda: "yesterday",
                lambda: f"last {self.pick(('week', 'month', 'year', 'night', *WEEKDAYS))}",
                lambda: f"{number_words(self.r.randint(2, 12))} {self.pick(TIME_UNITS)} ago",
                lambda: f"on {self.pick(WEEKDAYS)} {self.pick(DAY_PARTS)}",
                lambda: f"in {self.pick(MONTHS)}",
                lambda: f"earlier this {self.pick(('morning', 'week', 'year'))}",
                lambda: f"after {self.pick(MEALS)}",
                lambda: f"in {year_words(self.r.randint(1950, 2019))}",
                lambda: f"during {self.pick(EVENTS)}",
                lambda: f"last {self.pick(SEASONS)}",
            ]
        elif tense in _FUTURE_TENSES:
            opts = [
                lambda: "tomorrow",
                lambda: f"next {self.pick(('week', 'month', 'year', *WEEKDAYS))}",
                lambda: f"in {number_words(self.r.randint(2, 12))} {self.pick(TIME_UNITS)}",
                lambda: f"on {self.pick(WEEKDAYS)}",
                lambda: f"after {self.pick(EVENTS)}",
                lambda: f"before {self.pick(MEALS)}",
                lambda: f"later this {self.pick(('morning', 'afternoon', 'evening', 'week'))}",
                lambda: f"next {self.pick(SEASONS)}",
                lambda: f"at {self.clock_time()}",
            ]
        elif tense == "pres":
            opts = [
                lambda: f"every {self.pick(('day', 'week', 'morning', 'evening', *WEEKDAYS))}",
                lambda: f"on {self.pick(WEEKDAYS)}s",
                lambda: f"in the {self.pick(DAY_PARTS[:3])}",
                lambda: f"after {self.pick(MEALS)}",
                lambda: f"twice a {self.pick(('day', 'week', 'month'))}",
                lambda: f"in {self.pick(SEASONS)}",
                lambda: f"at {self.clock_time()}",
            ]
        elif tense in ("perf", "perfprog"):
            opts = [
                lambda: f"since {self.pick((*WEEKDAYS, *MONTHS, 'last year', 'the morning'))}",
                lambda: f"for {number_words(self.r.randint(2, 12))} {self.pick(TIME_UNITS)}",
                lambda: "recently",
                lambda: f"this {self.pick(('week', 'month', 'year', 'morning'))}",
            ]
        else:  # present progressive
            opts = [
                lambda: "right now",
                lambda: "at the moment",
                lambda: f"this {self.pick(DAY_PARTS[:3])}",
                lambda: "today",
            ]
        return self.pick(opts)().split()

    def clock_time(self) -> str:
        h = self.r.randint(1, 12)
        k = self.r.randrange(5)
        if k == 0:
            return f"{number_words(h)} o'clock"
        if k == 1:
            return f"half past {number_words(h)}"
        if k == 2:
            return f"quarter to {number_words(h)}"
        m = self.pick((5, 10, 15, 20, 25, 35, 40, 45, 50, 55))
        return f"{number_words(h)} {number_words(m)}"

    # -- verb groups -------------------------------------------------------------------------
    def _be(self, s: _Subj, past: bool) -> str:
        if past:
            return "were" if s.plural or s.person == 2 else "was"
        if s.person == 1 and not s.plural:
            return "am"
        return "are" if s.plural or s.person == 2 else "is"

    def verb_group(self, v: Verb, tense: str, s: _Subj, neg: bool = False) -> list[str]:
        """Finite verb group for subject ``s``; ``neg`` adds negation (often contracted)."""
        third = s.person == 3 and not s.plural
        c = self.chance(0.5)  # contract negation
        if tense == "pres":
            if neg:
                return ["doesn't" if c else "does not"] if third else ["don't" if c else "do not"]
            out = [v.s if third else v.base]
            return out
        if tense == "past":
            return ["didn't" if c else "did not", v.base] if neg else [v.past]
        if tense == "fut":
            return (["won't" if c else "will not"] if neg else ["will"]) + [v.base]
        if tense == "going":
            be = self._be(s, False)
            return [be, *(["not"] if neg else []), "going", "to", v.base]
        if tense in ("prog", "pastprog"):
            be = self._be(s, tense == "pastprog")
            if neg:
                return [be + "n't", v.ing] if c and be != "am" else [be, "not", v.ing]
            return [be, v.ing]
        if tense == "futprog":
            return ["will", *(["not"] if neg else []), "be", v.ing]
        if tense in ("perf", "perfprog"):
            have = "has" if third else "have"
            neg_w = [have + "n't"] if c else [have, "not"]
            head = neg_w if neg else [have]
            return [*head, "been", v.ing] if tense == "perfprog" else [*head, v.pp]
        if tense == "pastperf":
            return ["hadn't" if c else "had not", v.pp] if neg else ["had", v.pp]
        if tense == "used":
            return ["used", "to", v.base]
        # modal
        m = self.pick(MODALS)
        if neg:
            if m == "can":
                return ["can't" if c else "cannot", v.base]
            return [m, "not", v.base]
        return [m, v.base]

    def _finish_neg(self, vg: list[str], v: Verb, tense: str, neg: bool) -> list[str]:
        if neg and tense == "pres":
            return [*vg, v.base]
        return vg

    def pick_tense(self, group: str | None = None) -> str:
        if group == "past":
            return self.pick(("past", "past", "past", "pastprog", "pastperf", "used"))
        if group == "future":
            return self.pick(("fut", "fut", "going", "modal", "futprog"))
        if group == "present":
            return self.pick(("pres", "pres", "prog", "perf", "perfprog"))
        return self.pick(
            ("past", "past", "past", "pres", "pres", "fut", "going", "prog", "pastprog",
             "perf", "pastperf", "modal", "perfprog", "futprog", "used")
        )  # fmt: skip

    # -- clauses -----------------------------------------------------------------------------
    def clause(self, tense: str | None = None, extras: bool = True) -> list[str]:
        """Subject + verb group + complement, with optional adverb, place and time phrases."""
        tense = tense or self.pick_tense()
        frame = self.pick(
            ("object", "object", "object", "food", "person", "animal", "abstract", "abstract",
             "place", "vehicle", "intrans", "intrans", "intrans_animal", "clause")
        )  # fmt: skip
        if frame == "intrans_animal":
            words, plural = self.noun_phrase("animal", None, 0.5)
            s = _Subj(words, 3, plural)
            v = self.pick(VERBS["intrans_animal"] + VERBS["intrans_any"])
        else:
            s = self.person_subject()
            key = {"intrans": "intrans_person"}.get(frame, frame)
            pool = VERBS[key] + (VERBS["intrans_any"] if frame == "intrans" else ())
            v = self.pick(pool)
            if frame == "clause" and tense in ("prog", "pastprog", "futprog", "perfprog"):
                tense = {"prog": "pres", "pastprog": "past"}.get(tense, "perf")
        neg = self.chance(0.12) and tense != "used"
        vg = self._finish_neg(self.verb_group(v, tense, s, neg), v, tense, neg)
        if tense in ("pres", "past") and not neg and self.chance(0.15):
            vg = [self.pick(FREQ_ADVERBS), *vg]
        out = [*s.words, *vg]
        out += self.complement(frame, v, tense)
        if extras and frame != "clause":
            if self.chance(0.3):
                out.append(self.pick(ADVERBS))
            if frame not in ("place",) and self.chance(0.35):
                out += self.place_pp()
            if self.chance(0.4):
                out += self.time_expr(tense)
        return out

    def complement(self, frame: str, v: Verb, tense: str) -> list[str]:
        if frame == "object":
            obj = self.noun_phrase("object")[0]
            if self.chance(0.25):
                obj += self.surface_pp()
            return obj
        if frame == "food":
            return self.food_object()[0]
        if frame == "person":
            return self.person_object()
        if frame == "animal":
            return self.noun_phrase("animal")[0]
        if frame == "abstract":
            return self.noun_phrase("abstract", None, 0.5)[0]
        if frame == "place":
            if self.chance(0.15):
                return [self.pick(CITIES)]
            return self.noun_phrase("place", False, 0.45, 0.8)[0]
        if frame == "vehicle":
            return self.noun_phrase("vehicle", False, 0.4, 0.8)[0]
        if frame == "clause":
            inner = "past" if tense in _PAST_TENSES else None
            if inner is None and tense in ("pres", "perf", "prog", "perfprog"):
                inner = self.pick(("past", "future", "present"))
            return [
                "that",
                *self.clause(self.pick_tense(inner or "future"), extras=self.chance(0.5)),
            ]
        return []

    # -- sentence patterns -------------------------------------------------------------------
    def sentence(self) -> tuple[list[str], str]:
        """(words, end punctuation)."""
        pattern = self.pick(_PATTERNS)
        return pattern(self)


def _p_simple(g: _Grammar) -> tuple[list[str], str]:
    return g.clause(), "."


def _p_compound(g: _Grammar) -> tuple[list[str], str]:
    group = g.pick(("past", "future", "present"))
    a = g.clause(g.pick_tense(group), extras=g.chance(0.5))
    b = g.clause(g.pick_tense(group), extras=g.chance(0.5))
    conj = g.pick(("and", "but", "so", "and then", "yet"))
    return [*a[:-1], a[-1] + ",", *conj.split(), *b], "."


def _p_subordinate(g: _Grammar) -> tuple[list[str], str]:
    if g.chance(0.55):
        sub = g.pick(SUB_PAST)
        t_sub = "pastperf" if sub == "after" and g.chance(0.4) else "past"
        if sub == "because" and g.chance(0.3):
            t_sub = "pastprog"
        sc = g.clause(t_sub, extras=g.chance(0.4))
        mc = g.clause(g.pick(("past", "past", "pastprog")), extras=g.chance(0.4))
    else:
        sub = g.pick(SUB_FUTURE)
        sc = g.clause("pres", extras=g.chance(0.4))
        mc = g.clause(g.pick(("fut", "modal", "going")), extras=g.chance(0.4))
    if g.chance(0.5) and sub not in ("because", "since"):
        return [*sub.split(), *sc[:-1], sc[-1] + ",", *mc], "."
    return [*mc, *sub.split(), *sc], "."


def _p_while(g: _Grammar) -> tuple[list[str], str]:
    sc = g.clause("pastprog", extras=g.chance(0.5))
    mc = g.clause("past", extras=g.chance(0.4))
    if g.chance(0.5):
        return ["while", *sc[:-1], sc[-1] + ",", *mc], "."
    return [*mc, "while", *sc], "."


def _p_reported(g: _Grammar) -> tuple[list[str], str]:
    s = g.person_subject()
    verb = g.pick(VERBS["clause"])
    tense = g.pick(("past", "past", "pres", "perf"))
    vg = g._finish_neg(g.verb_group(verb, tense, s), verb, tense, False)
    inner_group = "past" if tense == "past" else g.pick(("past", "future"))
    inner = g.clause(g.pick_tense(inner_group), extras=g.chance(0.6))
    that = ["that"] if g.chance(0.6) else []
    return [*s.words, *vg, *that, *inner], "."


def _p_relative_subject(g: _Grammar) -> tuple[list[str], str]:
    words, plural = g.noun_phrase("person", None, 0.3, 0.9)
    v1 = g.pick(VERBS["object"])
    rel = ["who" if g.chance(0.6) else "that", v1.past, *g.noun_phrase("object", None, 0.4)[0]]
    s = _Subj([*words, *rel], 3, plural)
    if g.chance(0.4):
        adj = g.pick(ADJ_PERSON)
        link = (
            g.pick(("was", "seemed", "looked", "felt"))
            if not plural
            else g.pick(("were", "seemed", "looked", "felt"))
        )
        return [*s.words, link, adj, *g.time_expr("past")], "."
    v2 = g.pick(VERBS["intrans_person"] + VERBS["intrans_any"])
    tense = g.pick(("past", "pastprog", "pastperf"))
    return [*s.words, *g.verb_group(v2, tense, s), *g.place_pp()], "."


def _p_relative_object(g: _Grammar) -> tuple[list[str], str]:
    s = g.person_subject()
    v = g.pick(VERBS["object"])
    tense = g.pick(("past", "past", "pres", "fut", "perf"))
    vg = g._finish_neg(g.verb_group(v, tense, s), v, tense, False)
    obj = g.noun_phrase("object", None, 0.4, 0.95)[0]
    inner = g.person_subject()
    v2 = g.pick(VERBS["object"])
    t2 = g.pick(("past", "pastperf")) if tense == "past" else "past"
    rel = [g.pick(("that", "which", "")), *inner.words, *g.verb_group(v2, t2, inner)]
    out = [*s.words, *vg, *obj, *[w for w in rel if w]]
    if g.chance(0.4):
        out += g.time_expr(tense)
    return out, "."


def _p_passive(g: _Grammar) -> tuple[list[str], str]:
    kind = g.pick(("object", "object", "vehicle", "place", "abstract", "food"))
    frame = kind
    words, plural = g.noun_phrase(kind, None, 0.5, 0.8)
    v = g.pick(VERBS[frame])
    form = g.pick(("past", "past", "perf", "fut", "modal", "pastprog"))
    if form == "past":
        aux = ["were" if plural else "was"]
    elif form == "perf":
        aux = ["have" if plural else "has", "been"]
    elif form == "fut":
        aux = ["will", "be"]
    elif form == "modal":
        aux = [g.pick(("should", "must", "can", "might")), "be"]
    else:
        aux = ["were" if plural else "was", "being"]
    out = [*words, *aux, v.pp]
    if g.chance(0.5):
        out += ["by", *g.person_subject(allow_pronoun=False).words]
    if g.chance(0.4):
        out += g.time_expr({"past": "past", "pastprog": "past", "perf": "perf"}.get(form, "fut"))
    return out, "."


def _p_existential(g: _Grammar) -> tuple[list[str], str]:
    kind = g.pick(("object", "animal", "person", "vehicle", "food"))
    n = g.r.randint(2, 999) if g.chance(0.5) else g.r.randint(2, 30)
    noun = g.pick(NOUNS[kind])
    adj = [g.pick(_ADJ[kind])] if g.chance(0.5) else []
    quant = g.pick(("", "about", "nearly", "more than", "exactly", "at least"))
    verb = g.pick(("there were", "there are", "there will be", "there might be"))
    pp = g.place_pp() if kind != "object" or g.chance(0.5) else g.surface_pp()
    out = [*verb.split(), *quant.split(), *number_words(n).split(), *adj, noun.pl, *pp]
    if g.chance(0.3):
        tense = "past" if "were" in verb else "fut" if "will" in verb else "pres"
        out += g.time_expr(tense)
    return out, "."


def _p_predicative(g: _Grammar) -> tuple[list[str], str]:
    kind = g.pick(("person", "animal", "object", "place", "abstract", "food"))
    if kind == "person" and g.chance(0.4):
        subj = g.person_subject()
    else:
        words, plural = g.noun_phrase(kind, None, 0.3, 0.8)
        subj = _Subj(words, 3, plural)
    link = {
        "food": ("tasted", "smelled", "looked", "was"),
        "person": ("looked", "seemed", "felt", "was", "became", "sounded"),
    }.get(kind, ("looked", "seemed", "was", "became"))
    verb = g.pick(link)
    if verb == "was":
        verb = g._be(subj, True)
    adv = [g.pick(("very", "quite", "rather", "extremely", "surprisingly", "a little"))]
    adv = adv if g.chance(0.5) else []
    adj = g.pick(_ADJ[kind])
    tail: list[str] = []
    r = g.r.random()
    if r < 0.3:
        tail = g.time_expr("past")
    elif r < 0.5 and kind in ("person", "animal"):
        tail = g.place_pp()
    elif r < 0.65:
        tail = ["to", "everyone"] if kind in ("abstract", "food") else ["after", g.pick(EVENTS)]
    return [*subj.words, verb, *adv, adj, *tail], "."


def _p_yes_no(g: _Grammar) -> tuple[list[str], str]:
    s = g.person_subject()
    frame = g.pick(("object", "food", "person", "abstract", "place", "vehicle", "animal"))
    v = g.pick(VERBS[frame])
    third = s.person == 3 and not s.plural
    kind = g.pick(("did", "do", "will", "have", "modal", "be"))
    if kind == "did":
        head, vf, tense = ["did"], [v.base], "past"
    elif kind == "do":
        head, vf, tense = ["does" if third else "do"], [v.base], "pres"
    elif kind == "will":
        head, vf, tense = ["will"], [v.base], "fut"
    elif kind == "have":
        head = ["has" if third else "have"]
        vf, tense = (["ever", v.pp] if g.chance(0.4) else [v.pp]), "perf"
    elif kind == "modal":
        head, vf, tense = [g.pick(("can", "could", "should", "would"))], [v.base], "fut"
    else:
        past = g.chance(0.5)
        head, vf, tense = [g._be(s, past)], [v.ing], "pastprog" if past else "prog"
    out = [*head, *s.words, *vf, *g.complement(frame, v, tense)]
    if g.chance(0.4):
        out += g.time_expr(tense)
    return out, "?"


def _p_wh(g: _Grammar) -> tuple[list[str], str]:
    s = g.person_subject()
    third = s.person == 3 and not s.plural
    kind = g.r.randrange(5)
    if kind == 0:  # Which/what object did S V ...
        frame = g.pick(("object", "food", "vehicle", "abstract"))
        v = g.pick(VERBS[frame])
        noun = g.pick(NOUNS[frame])
        wh = [g.pick(("which", "what")), noun.sg] if g.chance(0.6) else ["what"]
        aux = g.pick((["did"], ["will"], ["does" if third else "do"]))
        tense = {"did": "past", "will": "fut"}.get(aux[0], "pres")
        out = [*wh, *aux, *s.words, v.base]
        if g.chance(0.5):
            out += g.time_expr(tense)
        return out, "?"
    if kind == 1:  # How many N did S V
        frame = g.pick(("object", "food", "animal", "vehicle"))
        v = g.pick(VERBS[frame])
        noun = g.pick(NOUNS[frame])
        tail = g.place_pp() if g.chance(0.5) else g.time_expr("past")
        return ["how", "many", noun.pl, "did", *s.words, v.base, *tail], "?"
    if kind == 2:  # Who V-ed the O
        frame = g.pick(("object", "food", "person", "abstract", "vehicle", "animal"))
        v = g.pick(VERBS[frame])
        tail = g.time_expr("past") if g.chance(0.5) else []
        return ["who", v.past, *g.complement(frame, v, "past"), *tail], "?"
    if kind == 3:  # Where/when/why did S V O
        frame = g.pick(("object", "food", "person", "abstract", "place", "vehicle", "animal"))
        v = g.pick(VERBS[frame])
        wh = g.pick(("where", "when", "why", "how"))
        aux = g.pick((["did"], ["will"], ["does" if third else "do"], ["should"]))
        return [wh, *aux, *s.words, v.base, *g.complement(frame, v, "past")], "?"
    # Why was/were S so ADJ
    adj = g.pick(ADJ_PERSON)
    tail = g.time_expr("past") if g.chance(0.5) else ["after", g.pick(EVENTS)]
    return ["why", g._be(s, True), *s.words, "so", adj, *tail], "?"


def _p_imperative(g: _Grammar) -> tuple[list[str], str]:
    frame = g.pick(("object", "food", "person", "abstract", "vehicle", "animal"))
    v = g.pick(VERBS[frame])
    obj = g.complement(frame, v, "fut")
    r = g.r.random()
    if r < 0.3:
        head = ["please", v.base]
    elif r < 0.5:
        head = [g.pick(("don't", "do not", "never")), v.base]
    elif r < 0.75:
        head = [g.pick(("remember", "try", "don't forget", "make sure")), "to", v.base]
        head = [w for part in head for w in part.split()]
    else:
        head = [v.base]
    tail: list[str] = []
    if g.chance(0.5):
        tail = [g.pick(("before", "after", "during")), g.pick(EVENTS)]
        tail = [w for part in tail for w in part.split()]
    elif g.chance(0.4):
        tail = [g.pick(ADVERBS)]
    return [*head, *obj, *tail], g.pick((".", ".", "!"))


def _p_numbers(g: _Grammar) -> tuple[list[str], str]:
    s = g.person_subject()
    k = g.r.randrange(5)
    if k == 0:
        price = g.r.randint(2, 950)
        obj = g.noun_phrase(g.pick(("object", "vehicle", "food")), False, 0.5, 0.9)[0]
        v = g.pick(("paid", "spent", "owed", "saved"))
        cur = g.pick(CURRENCIES)
        prep = "on" if v == "spent" else "for"
        return [*s.words, v, *number_words(price).split(), cur, prep, *obj], "."
    if k == 1:
        place = g.noun_phrase("place", False, 0.4, 1.0)[0]
        verb = g.pick(("opens", "closes", "will open", "closed", "opened"))
        return [
            *place,
            *verb.split(),
            "at",
            *g.clock_time().split(),
            *g.time_expr(
                "past" if verb in ("closed", "opened") else "pres" if verb.endswith("s") else "fut"
            ),
        ], "."
    if k == 2:
        age = number_words(g.r.randint(3, 95)).split()
        r = g.r.random()
        if r < 0.3:
            return [*s.words, g._be(s, False), *age, "years", "old", "today"], "."
        if r < 0.6:
            return [*s.words, "turned", *age, *g.time_expr("past")], "."
        tail = g.clause("past", extras=g.chance(0.3))
        return [*s.words, g._be(s, True), "only", *age, "years", "old", "when", *tail], "."
    if k == 3:
        floor = ordinal_words(g.r.randint(1, 40))
        be = g._be(s, True)
        place = g.noun_phrase("place", False, 0.3, 1.0)[0]
        return [*s.words, be, "on", "the", *floor.split(), "floor", "of", *place], "."
    v = _verb(g.pick(_DURATIVE))
    dist = number_words(g.r.randint(2, 60))
    units = ("minutes", "hours")
    if v.base in _MOTION:
        units += ("miles", "kilometers", "blocks")
    unit = g.pick(units)
    third = s.person == 3 and not s.plural
    vg = [v.past] if g.chance(0.5) else [v.s if third else v.base]
    return [*s.words, *vg, "for", *dist.split(), unit, *g.time_expr("past")], "."


_MOTION = frozenset(_words("run walk swim climb wander crawl march limp roam travel"))
_DURATIVE = _words("""
run|ran|run walk swim|swam|swum climb wander crawl march limp roam travel wait sleep|slept|slept
rest talk practice read|read|read study work sing|sang|sung dance
""")


def _p_travel(g: _Grammar) -> tuple[list[str], str]:
    s = g.person_subject()
    city = g.pick(CITIES)
    tense = g.pick(("past", "fut", "going", "perf", "pastperf"))
    v = g.pick(
        (_verb("move"), _verb("fly|flew|flown"), _verb("travel"), _verb("go|went|gone"),
         _verb("return"), _verb("drive|drove|driven"))
    )  # fmt: skip
    vg = g.verb_group(v, tense, s)
    prep = "from" if v.base == "return" and g.chance(0.5) else "to"
    out = [*s.words, *vg, prep, city]
    if g.chance(0.5):
        out += [g.pick(("with", "without")), *g.person_object()]
    if g.chance(0.5):
        out += g.time_expr(tense)
    return out, "."


_PATTERNS: tuple[Callable[[_Grammar], tuple[list[str], str]], ...] = (
    _p_simple, _p_simple, _p_simple, _p_compound, _p_subordinate, _p_subordinate, _p_while,
    _p_reported, _p_relative_subject, _p_relative_object, _p_passive, _p_existential,
    _p_predicative, _p_yes_no, _p_yes_no, _p_wh, _p_wh, _p_imperative, _p_numbers, _p_travel,
)  # fmt: skip


def _render(words: list[str], end: str) -> str:
    text = " ".join(w for w in words if w)
    text = text.rstrip(",")
    return text[:1].upper() + text[1:] + end


def count_words(sentence: str) -> int:
    """Words as counted for ``WORD_RANGE`` (whitespace-separated)."""
    return len(sentence.split())


def make_sentence(
    rng: random.Random, min_words: int = WORD_RANGE[0], max_words: int = WORD_RANGE[1]
) -> str:
    """One sentence with ``min_words`` to ``max_words`` words drawn from ``rng``."""
    if not 1 <= min_words <= max_words:
        raise ValueError(f"bad word range {min_words}..{max_words}")
    g = _Grammar(rng)
    for _ in range(10_000):
        words, end = g.sentence()
        text = _render(words, end)
        if min_words <= count_words(text) <= max_words:
            return text
    raise RuntimeError(f"could not make a sentence with {min_words}..{max_words} words")


def sentence_for(
    key: object, min_words: int = WORD_RANGE[0], max_words: int = WORD_RANGE[1]
) -> str:
    """Deterministic sentence for ``key`` (e.g. ``(seed, split, index, attempt)``)."""
    return make_sentence(random.Random(repr(key)), min_words, max_words)


def generate_sentences(
    n: int,
    seed: int = 0,
    min_words: int = WORD_RANGE[0],
    max_words: int = WORD_RANGE[1],
    unique: bool = True,
) -> list[str]:
    """``n`` sentences, deterministic by ``seed``; no repeats when ``unique``."""
    rng = random.Random(seed)
    out: list[str] = []
    seen: set[str] = set()
    tries = 0
    while len(out) < n:
        s = make_sentence(rng, min_words, max_words)
        tries += 1
        if unique and s in seen:
            if tries > 50 * n + 1000:
                raise RuntimeError("too many repeated sentences; widen the word range")
            continue
        seen.add(s)
        out.append(s)
    return out


# --------------------------------------------------------------------------------------------
# Vocabulary accounting


def _split_lower(items: Iterable[str]) -> set[str]:
    return {w.lower() for item in items for w in item.split()}


def lemmas() -> set[str]:
    """Distinct dictionary forms in the word lists (nouns, verbs, adjectives, adverbs, names)."""
    out: set[str] = set()
    for nouns in NOUNS.values():
        out |= {n.sg.lower() for n in nouns}
    out |= {m.lower() for m in MASS}
    for verbs in VERBS.values():
        out |= {v.base for v in verbs}
    for adjs in _ADJ.values():
        out |= set(adjs)
    out |= set(ADVERBS) | set(FREQ_ADVERBS)
    out |= _split_lower((*NAMES, *SURNAMES, *TITLES, *CITIES, *WEEKDAYS, *MONTHS, *SEASONS))
    return out


def vocabulary() -> set[str]:
    """Every distinct word form the generator can emit from its lists (inflections included)."""
    out = lemmas()
    for nouns in NOUNS.values():
        out |= {n.pl.lower() for n in nouns}
    for verbs in VERBS.values():
        out |= {f for v in verbs for f in (v.s, v.past, v.pp, v.ing)}
    out |= _split_lower(number_words(i) for i in range(100))
    out |= {ordinal_words(i) for i in range(1, 20)}
    return out
