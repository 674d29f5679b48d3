//! Catching "I want a human" before retrieval: a rule, not a
//! model, so it works the same in every deployment and is easy to extend.

/// Phrases (lowercase, `ё` written `е`, words joined by one space) that
/// ask for a person wherever they stand. Each must be specific enough not
/// to fire on ordinary support questions.
const PHRASES: &[&str] = &[
    // Russian
    "оператор",
    "живой человек",
    "живого человека",
    "живым человеком",
    "с человеком",
    "соедините с",
    "переключите на",
    "свяжите меня с",
    "специалист поддержки",
    "сотрудник поддержки",
    "не бот",
    "не с ботом",
    "не с роботом",
    "перезвоните",
    // English ("human" alone would catch "human resources")
    "a human",
    "human agent",
    "human operator",
    "human support",
    "real person",
    "live person",
    "live agent",
    "real agent",
    "representative",
    "operator",
    "not a bot",
    "call me back",
    "callback",
    "escalate this",
    "escalate it",
    "escalate my",
    "connect me",
    "transfer me",
    "put me through",
];

/// Words asking for something, and the person words they may ask for
/// within [`WINDOW`] words after them ("get me a manager", "позовите
/// сотрудника"). Russian words are stems, matched as prefixes.
const CUES_EN: &[&str] = &["talk", "speak", "get", "need", "want", "call", "reach"];
const PEOPLE_EN: &[&str] = &[
    "human",
    "person",
    "agent",
    "someone",
    "somebody",
    "manager",
    "supervisor",
    "engineer",
    "specialist",
    "staff",
    "employee",
    "rep",
];
const CUES_RU: &[&str] = &[
    "позов",
    "поговор",
    "позвон",
    "нуже",
    "нужн",
    "дайте",
    "хочу",
    "передайте",
    "свяж",
];
const PEOPLE_RU: &[&str] = &[
    "человек",
    "сотрудник",
    "менеджер",
    "специалист",
    "руководств",
    "консультант",
    "живо",
];
const WINDOW: usize = 3;
/// A message this short that names a person ("agent please",
/// "менеджера!") asks for one.
const SHORT: usize = 3;

fn is_person(word: &str) -> bool {
    PEOPLE_EN.contains(&word) || PEOPLE_RU.iter().any(|p| word.starts_with(p))
}

/// Whether the message asks to be handed to a person.
pub fn asks_for_human(message: &str) -> bool {
    let lower = message.to_lowercase().replace('ё', "е");
    let words: Vec<&str> = lower
        .split(|c: char| !c.is_alphanumeric() && c != '\'')
        .filter(|w| !w.is_empty())
        .collect();
    let joined = format!(" {} ", words.join(" "));
    if PHRASES.iter().any(|p| joined.contains(&format!(" {p}"))) {
        return true;
    }
    if words.len() <= SHORT && words.iter().any(|w| is_person(w)) {
        return true;
    }
    // Russian word order is free ("с менеджером поговорить"), so a
    // Russian cue looks both ways; an English one only forward ("the
    // manager wants a report" asks for nobody).
    words.iter().enumerate().any(|(i, w)| {
        let after = || words[i + 1..].iter().take(WINDOW).any(|x| is_person(x));
        let before = || {
            words[i.saturating_sub(WINDOW)..i]
                .iter()
                .any(|x| is_person(x))
        };
        if CUES_EN.contains(w) {
            after()
        } else if CUES_RU.iter().any(|p| w.starts_with(p)) {
            after() || before()
        } else {
            false
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_for_a_person_in_both_languages() {
        for text in [
            "Это не совсем то, что мне нужно. Нужна помощь оператора.",
            "Соедините с живым человеком, пожалуйста",
            "Позовите человека!",
            "I want to talk to a human",
            "Can I speak to a real person?",
            "Please connect me with a live agent",
            "REPRESENTATIVE",
            "agent please",
            "get me a manager, this is the third time my transfer is blocked",
            "I need to speak with someone from your sales team about 200 seats",
            "can you escalate this to a support engineer please",
            "мне нужен сотрудник банка срочно, карту украли",
            "хватит отвечать мне шаблонами, нужен нормальный сотрудник",
            "дайте номер телефона поддержки хочу позвонить живому сотруднику",
            "можно с менеджером поговорить по телефону?",
        ] {
            assert!(asks_for_human(text), "{text}");
        }
    }

    #[test]
    fn ordinary_questions_do_not_match() {
        for text in [
            "Как вернуть товар?",
            "How do I reset my password?",
            "How do I add a user to my account?",
            "Как работает документирование?",
            "What is the rate limit for the API?",
            "Who do I contact in human resources?",
            "How do I add a person to my workspace?",
            "Can a guest see the whole project?",
            "Как перевести деньги другому человеку?",
            "Can I give a manager role to a teammate?",
            "Our manager wants a monthly report",
        ] {
            assert!(!asks_for_human(text), "{text}");
        }
    }
}
