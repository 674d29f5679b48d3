//! What a chat turn does with the confidence of its answer: three bands.
//!
//! - **confident** (at or above `chat.offer_person_threshold`): the answer,
//!   with its sources;
//! - **middle** (from `chat.escalation_threshold` up to the offer
//!   threshold): the answer with its sources, and a line offering a person
//!   (the user says "operator" and the next turn hands over);
//! - **low** (below `chat.escalation_threshold`): a hand-over; the turn
//!   still carries the best sources, for the operator and for
//!   `chat.escalated`.

use rag::handover::asks_for_human;
use rag::knowledge::{Knowledge, KnowledgeError, Reply};

use crate::chat::escalation::is_cyrillic;

/// The two thresholds that split confidence into bands. Built only by
/// [`Thresholds::new`], so `hand_over_below <= offer_below` always holds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Thresholds {
    hand_over_below: f64,
    offer_below: f64,
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error(
    "thresholds must satisfy 0 <= escalation ({hand_over_below}) <= offer ({offer_below}) <= 1"
)]
pub struct InvalidThresholds {
    pub hand_over_below: f64,
    pub offer_below: f64,
}

impl Thresholds {
    pub fn new(hand_over_below: f64, offer_below: f64) -> Result<Self, InvalidThresholds> {
        if (0.0..=1.0).contains(&hand_over_below)
            && (0.0..=1.0).contains(&offer_below)
            && hand_over_below <= offer_below
        {
            Ok(Self {
                hand_over_below,
                offer_below,
            })
        } else {
            Err(InvalidThresholds {
                hand_over_below,
                offer_below,
            })
        }
    }

    pub fn hand_over_below(&self) -> f64 {
        self.hand_over_below
    }

    pub fn offer_below(&self) -> f64 {
        self.offer_below
    }

    pub fn band(&self, confidence: f64) -> Band {
        // NaN included: an answer of unknown confidence goes to a person.
        if confidence.is_nan() || confidence < self.hand_over_below {
            Band::HandOver
        } else if confidence < self.offer_below {
            Band::Offer
        } else {
            Band::Confident
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Band {
    Confident,
    Offer,
    HandOver,
}

/// Why a turn goes to a person, if it does.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Handover {
    /// The user asked for one.
    Asked,
    /// Low band: the answer's confidence.
    LowConfidence(f64),
    /// Middle band: answered, and a person offered; nobody is paged.
    Offered,
}

/// A chat turn's reply by band, and whether and why it goes to a person.
/// The worker answers every chat message through this, and the
/// development-set evaluation (`rag-eval`) measures exactly this.
pub async fn reply_for(
    knowledge: &Knowledge,
    thresholds: &Thresholds,
    message: &str,
) -> Result<(Reply, Option<Handover>), KnowledgeError> {
    // A request for a person is honoured before any retrieval: the user
    // said what they want, and an answer would only be in the way.
    if asks_for_human(message) {
        return Ok((handover_reply(message), Some(Handover::Asked)));
    }
    let reply = knowledge.reply(message).await?;
    let band = if reply.answer.trim().is_empty() {
        Band::HandOver
    } else {
        thresholds.band(reply.confidence)
    };
    Ok(match band {
        Band::Confident => (reply, None),
        Band::Offer => (
            Reply {
                answer: format!("{}\n\n{}", reply.answer, offer_line(message)),
                ..reply
            },
            Some(Handover::Offered),
        ),
        // The hand-over keeps the best sources: the operator starts from
        // them, and so does `chat.escalated`.
        Band::HandOver => (
            Reply {
                confidence: reply.confidence,
                sources: reply.sources,
                ..handover_reply(message)
            },
            Some(Handover::LowConfidence(reply.confidence)),
        ),
    })
}

/// What the user reads when a person takes over, in their language.
pub fn handover_reply(message: &str) -> Reply {
    let answer = if is_cyrillic(message) {
        "Передаю ваш вопрос оператору поддержки: он ответит вам в этом диалоге."
    } else {
        "I'm handing your question to a support operator, who will reply in this conversation."
    };
    Reply {
        answer: answer.to_owned(),
        sources: Vec::new(),
        confidence: 0.0,
    }
}

/// The line added to a middle-band answer, in the user's language.
pub fn offer_line(message: &str) -> &'static str {
    if is_cyrillic(message) {
        "Если это не помогло, напишите «оператор» — подключу специалиста поддержки."
    } else {
        "If this doesn't help, reply \"operator\" and I'll bring in a support agent."
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confidence_falls_into_three_bands() {
        let t = Thresholds::new(0.35, 0.55).unwrap();
        assert_eq!(t.band(0.1), Band::HandOver);
        assert_eq!(t.band(0.35), Band::Offer);
        assert_eq!(t.band(0.549), Band::Offer);
        assert_eq!(t.band(0.55), Band::Confident);
        assert_eq!(t.band(1.0), Band::Confident);
        assert_eq!(t.band(f64::NAN), Band::HandOver);
    }

    #[test]
    fn equal_thresholds_mean_no_middle_band() {
        let t = Thresholds::new(0.4, 0.4).unwrap();
        assert_eq!(t.band(0.39), Band::HandOver);
        assert_eq!(t.band(0.4), Band::Confident);
    }

    #[test]
    fn inverted_or_out_of_range_thresholds_are_refused() {
        assert!(Thresholds::new(0.6, 0.5).is_err());
        assert!(Thresholds::new(-0.1, 0.5).is_err());
        assert!(Thresholds::new(0.3, 1.5).is_err());
    }

    #[test]
    fn handover_speaks_the_users_language() {
        assert!(
            handover_reply("Позовите человека")
                .answer
                .contains("оператору")
        );
        assert!(handover_reply("I want a human").answer.contains("operator"));
    }

    #[test]
    fn the_offer_speaks_the_users_language() {
        assert!(offer_line("Где мой заказ?").contains("оператор"));
        assert!(offer_line("Where is my order?").contains("operator"));
    }
}
