//! The plain, polite agent the model half plays when no scenario's script applies: before the
//! callee's first recognised line tells it which script this call follows, and for callee
//! lines no single script knows.
//!
//! It works only from what a model would have: the session's instructions (the `Goal:` and
//! `Context:` lines the engine writes, and whom it calls for) and what the callee said. It
//! never reads its instructions aloud: every line is composed here from those facts.

/// What the agent was asked to do, read from the session's instructions.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct Brief {
    /// Whom the call is made for ("on behalf of X").
    pub who: Option<String>,
    /// The first sentence of the `Goal:` line.
    pub goal: Option<String>,
    /// Facts it may use: the `Context:` line's sentences and the goal's other sentences.
    pub facts: Vec<String>,
}

/// What the agent says to one callee turn, and whether it then hangs up.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Move {
    Say(String),
    /// Say goodbye, then call `end_call` with this outcome and summary.
    Close {
        line: String,
        outcome: &'static str,
        summary: String,
    },
    /// Say a word, then press these keys with `send_dtmf`.
    Press {
        line: String,
        digits: String,
    },
}

impl Brief {
    pub(super) fn from_instructions(instructions: &str) -> Brief {
        let field = |name: &str| {
            instructions
                .lines()
                .find_map(|l| l.trim().strip_prefix(name))
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let who = instructions
            .find("on behalf of ")
            .map(|i| &instructions[i + "on behalf of ".len()..])
            .and_then(|rest| rest.split(['.', '\n', ',']).next())
            .map(|w| w.trim().to_owned())
            .filter(|w| !w.is_empty() && w.len() <= 60);
        let goal_line = field("Goal:");
        let mut facts = Vec::new();
        let goal = goal_line.as_deref().map(|g| {
            let mut s = sentences(g);
            let first = if s.is_empty() {
                g.to_owned()
            } else {
                s.remove(0)
            };
            facts.extend(s);
            first
        });
        if let Some(c) = field("Context:") {
            facts.extend(sentences(&c));
        }
        Brief { who, goal, facts }
    }

    /// The opening line: who calls, for whom, and why, in one sentence pair of its own.
    pub(super) fn greeting(&self) -> String {
        match &self.goal {
            Some(goal) => format!(
                "Hello, this is an assistant calling on behalf of {}. {}",
                self.who.as_deref().unwrap_or("a client"),
                purpose(goal)
            ),
            None => "Hello, this is an assistant. How can I help you today?".to_owned(),
        }
    }

    /// The answer to a callee line (`None`: audio the agent could not make out). `earlier`
    /// is what the callee said before, for the outcome when the callee closes.
    pub(super) fn reply(&self, heard: Option<&str>, earlier: &[String], can_press: bool) -> Move {
        let Some(text) = heard else {
            return Move::Say("Sorry, I didn't catch that. Could you say it again?".into());
        };
        let lower = text.to_lowercase();
        if CLOSING.iter().any(|c| lower.contains(c)) {
            let mut all: Vec<&str> = earlier.iter().map(String::as_str).collect();
            all.push(text);
            let outcome = outcome(&all);
            let line = if outcome == "failure" {
                "I understand. Thank you for your time, goodbye!"
            } else {
                "Thank you so much for your help. Goodbye!"
            };
            return Move::Close {
                line: line.to_owned(),
                outcome,
                summary: summary(text),
            };
        }
        if can_press && let Some(digits) = self.menu_choice(&lower) {
            return Move::Press {
                line: "One moment, please.".into(),
                digits,
            };
        }
        if text.contains('?') {
            if let Some(fact) = self.fact_for(&lower) {
                return Move::Say(fact);
            }
            let yes_no = [
                "is this", "is it", "are you", "is that", "do you", "can you",
            ];
            if yes_no.iter().any(|q| lower.starts_with(q)) {
                return Move::Say(match &self.goal {
                    Some(g) => format!("Yes. {}", purpose(g)),
                    None => "Yes, that's right.".into(),
                });
            }
            return Move::Say(
                "I'm sorry, I don't have that information. I'll check and get back to you.".into(),
            );
        }
        if POSITIVE.iter().any(|p| lower.contains(p)) {
            return Move::Say("Great, thank you.".into());
        }
        Move::Say("Okay, thank you.".into())
    }

    /// A phone menu ("For reservations, press one."): the option whose words best match the
    /// goal, or the first one.
    fn menu_choice(&self, lower: &str) -> Option<String> {
        let goal = self.goal.as_deref().unwrap_or("").to_lowercase();
        let goal_words = words(&goal);
        let mut best: Option<(usize, String)> = None;
        for part in lower.split(['.', ';']) {
            let Some(at) = part.find("press ") else {
                continue;
            };
            let key = part[at + 6..]
                .split(|c: char| c.is_whitespace() || c == ',')
                .next()
                .unwrap_or("");
            let Some(digit) = key_digit(key) else {
                continue;
            };
            let score = words(part)
                .iter()
                .filter(|w| goal_words.contains(w))
                .count();
            if best.as_ref().is_none_or(|(s, _)| score > *s) {
                best = Some((score, digit));
            }
        }
        best.map(|(_, d)| d)
    }

    /// The context fact that answers a question, if one fits.
    fn fact_for(&self, q: &str) -> Option<String> {
        let has = |keys: &[&str]| keys.iter().any(|k| q.contains(k));
        let digits = |f: &str| f.chars().filter(char::is_ascii_digit).count();
        let pick = |ok: &dyn Fn(&str) -> bool| self.facts.iter().find(|f| ok(f)).cloned();
        let numbers = [
            "number",
            "phone",
            "reach you",
            "call back",
            "callback",
            "contact",
        ];
        if has(&numbers)
            && let Some(f) = pick(&|f| digits(f) >= 3)
        {
            return Some(f);
        }
        if has(&["name", "who ", "under"]) {
            let named = |f: &str| {
                f.split_whitespace()
                    .skip(1)
                    .any(|w| w.chars().next().is_some_and(char::is_uppercase))
            };
            if let Some(f) =
                pick(&|f| named(f) && f.to_lowercase().contains("name")).or_else(|| pick(&named))
            {
                return Some(f);
            }
        }
        if has(&["when", "time", "date", "day"]) {
            let timely = |f: &str| {
                let l = f.to_lowercase();
                digits(f) > 0 || TIME_WORDS.iter().any(|t| l.contains(t))
            };
            if let Some(f) = pick(&timely) {
                return Some(f);
            }
        }
        let qw = words(q);
        self.facts
            .iter()
            .map(|f| {
                let fw = words(&f.to_lowercase());
                (fw.iter().filter(|w| qw.contains(w)).count(), f)
            })
            .filter(|(n, _)| *n > 0)
            .max_by_key(|(n, _)| *n)
            .map(|(_, f)| f.clone())
    }
}

const CLOSING: &[&str] = &[
    "goodbye",
    "good bye",
    "bye",
    "can't talk",
    "cannot talk",
    "not interested",
    "see you",
    "have a nice day",
    "have a good day",
    "take care",
    "no thank you",
    "hang up",
    "that's all",
];
const POSITIVE: &[&str] = &[
    "yes",
    "sure",
    "got it",
    "confirmed",
    "booked",
    "done",
    "works",
    "moved",
    "available",
    "will do",
    "no problem",
    "of course",
    "see you then",
    "i'll pass",
];
const NEGATIVE: &[&str] = &[
    "can't",
    "cannot",
    "unable",
    "not available",
    "no longer",
    "fully booked",
    "unfortunately",
    "not possible",
];
const TIME_WORDS: &[&str] = &[
    "tonight",
    "today",
    "tomorrow",
    "morning",
    "afternoon",
    "evening",
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
    " pm",
    " am",
];
const STOP: &[&str] = &[
    "the", "and", "for", "you", "your", "what", "which", "that", "this", "with", "have", "could",
    "would", "should", "please", "there", "about", "from", "will", "when", "where", "does", "just",
];
const IMPERATIVE: &[&str] = &[
    "book",
    "reserve",
    "ask",
    "confirm",
    "move",
    "reach",
    "leave",
    "tell",
    "check",
    "find",
    "get",
    "make",
    "schedule",
    "reschedule",
    "cancel",
    "order",
    "request",
    "arrange",
    "change",
    "let",
    "inform",
    "remind",
    "see",
    "verify",
    "set",
    "buy",
    "pay",
    "report",
    "pick",
    "update",
    "deliver",
    "say",
];

fn outcome(lines: &[&str]) -> &'static str {
    let count = |cues: &[&str]| {
        lines
            .iter()
            .map(|l| l.to_lowercase())
            .filter(|l| cues.iter().any(|c| l.contains(c)))
            .count()
    };
    let (yes, no) = (count(POSITIVE), count(NEGATIVE));
    match yes.cmp(&no) {
        std::cmp::Ordering::Greater => "success",
        std::cmp::Ordering::Less => "failure",
        std::cmp::Ordering::Equal => "unknown",
    }
}

fn summary(last: &str) -> String {
    let quoted: String = last.chars().take(160).collect();
    format!("The other side ended the conversation, saying: \"{quoted}\"")
}

fn key_digit(key: &str) -> Option<String> {
    const NAMES: &[&str] = &[
        "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
    ];
    let k = key.trim_matches(|c: char| !c.is_alphanumeric() && c != '*' && c != '#');
    if k.len() == 1 && (k.chars().all(|c| c.is_ascii_digit()) || k == "*" || k == "#") {
        return Some(k.to_owned());
    }
    match k {
        "star" => Some("*".into()),
        "pound" | "hash" => Some("#".into()),
        _ => NAMES.iter().position(|n| *n == k).map(|d| d.to_string()),
    }
}

/// Content words (lower case, 4+ letters, no stop words), cut to a five-letter stem so that
/// "reserve" meets "reservations".
fn words(s: &str) -> Vec<String> {
    s.split(|c: char| !c.is_alphanumeric() && c != '\'')
        .filter(|w| w.len() > 3 && !STOP.contains(w))
        .map(|w| w.chars().take(5).collect())
        .collect()
}

/// Sentences, each ending with its punctuation (a final one without gets a full stop).
fn sentences(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let chars: Vec<char> = text.chars().collect();
    for (i, c) in chars.iter().enumerate() {
        cur.push(*c);
        let end =
            matches!(c, '.' | '?' | '!') && chars.get(i + 1).is_none_or(|n| n.is_whitespace());
        if end {
            let s = cur.trim().to_owned();
            if !s.is_empty() {
                out.push(s);
            }
            cur.clear();
        }
    }
    let s = cur.trim();
    if !s.is_empty() {
        out.push(format!("{s}."));
    }
    out
}

/// "I'm calling to …": the goal's first sentence, turned into the caller's own words.
fn purpose(goal: &str) -> String {
    let g = goal.trim().trim_end_matches(['.', '?', '!']).trim();
    let ws: Vec<&str> = g.split_whitespace().collect();
    let Some(first) = ws.first() else {
        return "I'm calling with a quick question.".into();
    };
    let w0 = first.to_lowercase();
    let rest = |from: usize| ws[from.min(ws.len())..].join(" ");
    if ["could", "can", "would", "will"].contains(&w0.as_str())
        && ws.get(1).is_some_and(|w| w.eq_ignore_ascii_case("you"))
    {
        let mut from = 2;
        if ws.get(2).is_some_and(|w| w.eq_ignore_ascii_case("please")) {
            from = 3;
        }
        return format!("I'm calling to ask whether you could {}.", rest(from));
    }
    if w0 == "please" && ws.len() > 1 {
        return purpose(&rest(1));
    }
    if IMPERATIVE.contains(&w0.as_str()) {
        return format!("I'm calling to {w0} {}.", rest(1)).replace(" .", ".");
    }
    if goal.trim_end().ends_with('?') {
        return format!("I'm calling to ask: {}?", lower_first(g));
    }
    format!("I'm calling about the following: {}.", lower_first(g))
}

/// `g` with its first letter in lower case, unless the first word is "I" or an acronym.
fn lower_first(g: &str) -> String {
    let first = g.split_whitespace().next().unwrap_or("");
    let keep = first == "I"
        || first.starts_with("I'")
        || first.chars().nth(1).is_some_and(char::is_uppercase);
    let mut c = g.chars();
    match c.next() {
        Some(f) if !keep => f.to_lowercase().chain(c).collect(),
        _ => g.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INSTR: &str = "You are a voice assistant placing an outbound phone call on behalf of Alex Kim. You are the caller.\n\nGoal: Could you reserve dinner for 2 people around 7:30pm tonight? Name is Alex Kim.\nContext: Alex's callback number is +14155550123.\n";

    #[test]
    fn reads_the_brief_and_speaks_in_its_own_words() {
        let b = Brief::from_instructions(INSTR);
        assert_eq!(b.who.as_deref(), Some("Alex Kim"));
        assert_eq!(
            b.goal.as_deref(),
            Some("Could you reserve dinner for 2 people around 7:30pm tonight?")
        );
        assert_eq!(
            b.facts,
            vec![
                "Name is Alex Kim.".to_owned(),
                "Alex's callback number is +14155550123.".to_owned()
            ]
        );
        let g = b.greeting();
        assert_eq!(
            g,
            "Hello, this is an assistant calling on behalf of Alex Kim. I'm calling to ask whether you could reserve dinner for 2 people around 7:30pm tonight."
        );
        assert!(!g.contains("You are") && !g.contains("Goal:"));
        let asked = Brief::from_instructions("Goal: Can the delivery come tomorrow instead?\n");
        assert_eq!(
            asked.greeting(),
            "Hello, this is an assistant calling on behalf of a client. I'm calling to ask: can the delivery come tomorrow instead?"
        );
        let imperative = Brief::from_instructions("Goal: Book a table for two at 7:30 tonight\n");
        assert_eq!(
            imperative.greeting(),
            "Hello, this is an assistant calling on behalf of a client. I'm calling to book a table for two at 7:30 tonight."
        );
    }

    #[test]
    fn answers_from_context_and_closes_on_goodbye() {
        let b = Brief::from_instructions(INSTR);
        assert_eq!(
            b.reply(Some("What name should I put it under?"), &[], true),
            Move::Say("Name is Alex Kim.".into())
        );
        assert_eq!(
            b.reply(Some("And a phone number?"), &[], true),
            Move::Say("Alex's callback number is +14155550123.".into())
        );
        assert!(matches!(
            b.reply(Some("What is your budget?"), &[], true),
            Move::Say(s) if s.contains("don't have that information")
        ));
        let close = b.reply(
            Some("All set. Goodbye!"),
            &["Yes, we have a table.".into()],
            true,
        );
        assert!(
            matches!(
                &close,
                Move::Close {
                    outcome: "success",
                    ..
                }
            ),
            "{close:?}"
        );
        assert_eq!(
            b.reply(
                Some("For billing, press one. For reservations, press two."),
                &[],
                true
            ),
            Move::Press {
                line: "One moment, please.".into(),
                digits: "2".into()
            }
        );
    }
}
